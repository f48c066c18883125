// Package cache is scaleout's multi-layer cache: a bounded in-process memory
// layer in front of Redis, shared by every instance of an app (and by the
// gateway's HTTP cache).
//
// # Layers
//
// The memory layer is a W-TinyLFU cache (github.com/maypok86/otter/v2)
// bounded by bytes (key + value + tags + EntryOverhead per entry), with a
// per-entry expiry. The Redis layer (github.com/redis/go-redis/v9) stores
// each value with a PX expiry, plus one set per tag; multi-key writes
// (value, tag sets, their expiries and the invalidation message) go out in
// one pipelined round trip. A read goes to memory, then Redis (filling
// memory with the value's remaining TTL in Redis, never longer), then, for
// GetOrFetch, to the caller's Fetcher. Without a Redis client the cache is
// memory only.
//
// # Coalescing
//
// GetOrFetch coalesces concurrent misses of one key on a node into one load.
// Across nodes, the loading node takes a short Redis lock (SET NX PX,
// Config.LockTTL); other nodes poll Redis for its value for up to
// Config.LockWait, then fetch anyway, so a slow or dead lock holder delays
// them by at most LockWait; if the holder releases the lock without a value
// (its fetch failed), a waiter takes the lock over at once. A fetched value is written to Redis with SET NX,
// so it never overwrites a value another node set while it was fetching,
// and it is not kept at all if the key was invalidated on this node during
// the fetch. (Cache-aside cannot close every race with the system of
// record: an invalidation that reaches this node only after its fetch wrote
// to Redis leaves that value until its TTL.)
//
// # Cross-node invalidation: pub/sub
//
// Set, SetAndPersist, Delete and InvalidateTags publish a small message on a
// Redis pub/sub channel (<prefix>inval) in the same round trip as the write;
// every other node drops the named keys, or the entries carrying the named
// tags, from its memory layer. We chose pub/sub over RESP3 client-side
// caching (CLIENT TRACKING) because: tracking invalidates only keys a
// connection has read from Redis, while our memory layer also holds values a
// node fetched or set itself; invalidation by tag is one message instead of
// one per key; it works the same with go-redis's RESP2 connections and
// through proxies that do not forward tracking pushes; and the same channel
// carries the "flush" needed after an outage. Delivery is at most once, so
// the subscriber treats any break of its connection as an outage (below).
//
// # Redis outages
//
// When a Redis command cannot reach Redis or the subscription breaks (or an
// idle subscription does not answer PING within Config.HealthInterval), the
// cache enters outage mode: it stops calling Redis, serves from memory and
// the Fetcher, counts the errors in Stats and returns none of them to
// callers of Get, GetOrFetch, Set, Delete or InvalidateTags. It remembers the
// keys and tags written meanwhile. (An error reply such as WRONGTYPE, or a
// record that does not decode, is counted and read as a miss, but is no
// outage.) The subscriber reconnects with backoff (at most 250 ms between
// attempts); once Redis answers it deletes the remembered keys and tags from
// Redis and announces them to the other nodes (if more than 100,000 were
// remembered, it deletes every key under the prefix instead), flushes its
// own memory layer if the subscription broke (it may hold values whose
// invalidations it missed; if only commands failed, no invalidation was
// missed and the memory layer is kept), and leaves outage mode.
//
// Staleness is bounded in the meantime: no node can hear invalidations, so
// during an outage a memory entry is served only while it is within its TTL
// and within Config.OutageMaxStale of the later of its store time and the
// start of the outage. Nothing is ever served past its TTL. A silent
// network failure is noticed within about two HealthIntervals, a closed
// connection at once.
//
// # Concurrency
//
// All methods of Cache are safe for concurrent use. Values and tags returned
// by Get and GetOrFetch are shared with the cache and must not be modified;
// Set copies what it is given. Close stops the background subscriber; it
// does not close the Redis client, which the caller owns.
//
// # Metrics
//
// Stats returns a plain snapshot; Collector returns a Prometheus collector
// (scaleout_cache_* with a layer label for per-layer metrics), for the
// caller to register.
package cache
