package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Item is a cached value.
//
// On Set and from a Fetcher, TTL is the lifetime (0 means Config.DefaultTTL)
// and the cache takes a copy of Value on Set. From Get and GetOrFetch, TTL is
// the remaining lifetime, and Value and Tags are shared with the cache: read
// them, do not modify them.
type Item struct {
	Value []byte
	TTL   time.Duration
	// Tags name groups of entries that InvalidateTags removes together.
	Tags []string
}

// Fetcher loads a value that is not in the cache (from the database, an
// upstream service, …) for GetOrFetch. Its ctx is cancelled when every
// caller waiting for the value has given up, or when the cache closes. The
// cache keeps the returned Value and Tags without copying them: do not
// modify them afterwards. An error is returned to the callers and nothing
// is cached.
type Fetcher interface {
	Fetch(ctx context.Context, key string) (Item, error)
}

// FetcherFunc adapts a function to Fetcher.
type FetcherFunc func(ctx context.Context, key string) (Item, error)

// Fetch calls f.
func (f FetcherFunc) Fetch(ctx context.Context, key string) (Item, error) { return f(ctx, key) }

var (
	// ErrInvalidKey is returned for an empty key.
	ErrInvalidKey = errors.New("cache: invalid key")
	// ErrInvalidTTL is returned for a negative TTL.
	ErrInvalidTTL = errors.New("cache: invalid ttl")
	// ErrInvalidTag is returned for an empty tag.
	ErrInvalidTag = errors.New("cache: invalid tag")
	// ErrClosed is returned by GetOrFetch after Close.
	ErrClosed = errors.New("cache: closed")
	// ErrFetchPanicked is returned by GetOrFetch when the Fetcher panicked.
	ErrFetchPanicked = errors.New("cache: fetcher panicked")
)

// seqSlots is the number of invalidation counters keys hash into.
const seqSlots = 4096

// maxDirty bounds the keys and tags remembered during a Redis outage; past
// it, recovery deletes every key under the prefix instead.
const maxDirty = 100_000

// Cache is a multi-layer cache: a bounded memory layer in front of an
// optional Redis layer shared by every node with the same Config.Prefix.
// Create it with New and release it with Close. All methods are safe for
// concurrent use.
type Cache struct {
	cfg       Config
	mem       *memory
	rds       *redisLayer // nil for a memory-only cache
	node      string
	seed      maphash.Seed
	flight    flight
	lockSeq   atomic.Uint64
	fakeClock bool
	// With the default clock, now is start + monotonic time since start:
	// one cheap clock read per call, immune to wall-clock jumps.
	start     time.Time
	startNano int64

	// Invalidation counters: a fill from a slower layer is dropped from
	// memory if its key's counter (or tagSeq) moved while it was loading.
	seqs   [seqSlots]atomic.Uint64
	tagSeq atomic.Uint64

	// outageStart is when Redis became unusable (unix ns), 0 while healthy.
	// While it is set, Redis is skipped and writes are remembered in dirty.
	outageStart   atomic.Int64
	subLost       atomic.Bool // the subscription broke during this outage
	dirtyMu       sync.Mutex
	dirtyKeys     map[string]struct{}
	dirtyTags     map[string]struct{}
	dirtyOverflow bool
	maxDirty      int // maxDirty, lowered by tests

	fetches, fetchErrors, coalesced, lockWaits, lockTimeouts atomic.Uint64
	invalSent, invalReceived, outages, recoveries            atomic.Uint64

	ps        atomic.Pointer[redis.PubSub] // the live subscription, if any
	stop      context.CancelFunc
	bg        sync.WaitGroup // the subscriber and the stats refresher
	closeOnce sync.Once
}

// New builds a Cache. With a Redis client it subscribes to the invalidation
// channel before returning (waiting at most until ctx ends); if Redis is
// unreachable New still succeeds, the cache starts in outage mode, and it
// connects in the background. New fails only for an invalid Config.
func New(ctx context.Context, cfg Config) (*Cache, error) {
	fake := cfg.Now != nil
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	c := &Cache{
		cfg:       cfg,
		node:      hex.EncodeToString(id[:]),
		seed:      maphash.MakeSeed(),
		fakeClock: fake,
		start:     time.Now(),
		dirtyKeys: make(map[string]struct{}),
		dirtyTags: make(map[string]struct{}),
		maxDirty:  maxDirty,
	}
	c.startNano = c.start.UnixNano()
	c.mem, err = newMemory(cfg.MemoryMaxBytes, c.nowNano, fake)
	if err != nil {
		return nil, err
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.stop = stop
	c.flight.closing = bg
	if cfg.Redis == nil {
		return c, nil
	}
	c.rds = newRedisLayer(cfg.Redis, cfg.Prefix)
	ps, err := c.subscribe(ctx)
	if err != nil {
		c.subLost.Store(true)
		c.markOutage(err)
	}
	c.bg.Go(func() { c.subscriber(bg, ps) })
	c.bg.Go(func() { c.refreshServerStats(bg) })
	return c, nil
}

// Close stops the background work: it cancels the context of running
// fetches and waits for them and for the subscriber to end. It does not
// close the Redis client. Calls racing with Close are safe, but the cache
// is not meant to be used after it: GetOrFetch misses return ErrClosed, and
// the other methods no longer hear other nodes' invalidations.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		c.stop()
		if ps := c.ps.Load(); ps != nil {
			_ = ps.Close() // interrupts a blocked receive
		}
		c.bg.Wait()
		c.flight.close()
		c.mem.close()
	})
	return nil
}

// nowNano returns the current time in unix nanoseconds.
func (c *Cache) nowNano() int64 {
	if c.fakeClock {
		return c.cfg.Now().UnixNano()
	}
	return c.startNano + int64(time.Since(c.start))
}

func (c *Cache) slot(key string) *atomic.Uint64 {
	return &c.seqs[maphash.String(c.seed, key)%seqSlots]
}

// snapshot returns a value that changes whenever key or any tag is
// invalidated on this node.
func (c *Cache) snapshot(key string) uint64 { return c.slot(key).Load() + c.tagSeq.Load() }

func (c *Cache) ttl(ttl time.Duration) time.Duration {
	if ttl == 0 {
		ttl = c.cfg.DefaultTTL
	}
	if c.cfg.MaxTTL > 0 && ttl > c.cfg.MaxTTL {
		ttl = c.cfg.MaxTTL
	}
	return ttl
}

func checkItem(key string, it Item) error {
	if key == "" {
		return ErrInvalidKey
	}
	if it.TTL < 0 {
		return fmt.Errorf("%w: %v for key %q", ErrInvalidTTL, it.TTL, key)
	}
	for _, t := range it.Tags {
		if t == "" {
			return fmt.Errorf("%w: empty tag for key %q", ErrInvalidTag, key)
		}
	}
	return nil
}

// redisUsable reports whether operations should go to Redis now.
func (c *Cache) redisUsable() bool { return c.rds != nil && c.outageStart.Load() == 0 }

// Get returns the value of key from the memory layer or, on a miss there,
// from Redis (then keeping it in memory for its remaining TTL). Redis errors
// are counted in Stats, not returned: they read as a miss.
func (c *Cache) Get(ctx context.Context, key string) (Item, bool) {
	if e, now, ok := c.mem.get(key, c.outageStart.Load(), c.cfg.OutageMaxStale); ok {
		return Item{Value: e.value, TTL: time.Duration(e.expiresAt - now), Tags: e.tags}, true
	}
	if !c.redisUsable() {
		return Item{}, false
	}
	return c.getRedis(ctx, key)
}

// getRedis reads key from Redis and fills the memory layer with it.
func (c *Cache) getRedis(ctx context.Context, key string) (Item, bool) {
	snap := c.snapshot(key)
	value, tags, ttl, ok, err := c.rds.get(ctx, key, c.cfg.DefaultTTL)
	if err != nil {
		c.redisFailed(ctx, err)
		return Item{}, false
	}
	if !ok {
		return Item{}, false
	}
	if c.cfg.MaxTTL > 0 && ttl > c.cfg.MaxTTL {
		ttl = c.cfg.MaxTTL
	}
	c.fillMemory(key, value, tags, ttl, snap)
	return Item{Value: value, TTL: ttl, Tags: tags}, true
}

// fillMemory stores a value read from a slower layer, unless key was
// invalidated since snap was taken.
func (c *Cache) fillMemory(key string, value []byte, tags []string, ttl time.Duration, snap uint64) {
	now := c.nowNano()
	e := &memEntry{value: value, tags: tags, expiresAt: now + int64(ttl), storedAt: now}
	if c.snapshot(key) != snap || !c.mem.set(key, e) {
		return
	}
	// An invalidation may have landed between the check and the store.
	if c.snapshot(key) != snap {
		c.mem.deleteIf(key, e)
	}
}

// Set stores it under key in every layer and tells the other nodes to drop
// their copy. Redis errors are counted in Stats, not returned; the error is
// for an invalid key, TTL or tag.
func (c *Cache) Set(ctx context.Context, key string, it Item) error {
	if err := checkItem(key, it); err != nil {
		return err
	}
	ttl := c.ttl(it.TTL)
	value, tags := bytes.Clone(it.Value), slices.Clone(it.Tags)
	if value == nil {
		value = []byte{}
	}
	c.slot(key).Add(1)
	now := c.nowNano()
	e := &memEntry{value: value, tags: tags, expiresAt: now + int64(ttl), storedAt: now}
	if !c.mem.set(key, e) {
		c.mem.delete(key) // too large for memory: at least drop the old value
	}
	if c.rds == nil {
		return nil
	}
	record := encodeRecord(value, tags)
	msg := encodeMessage(message{kind: msgKeys, node: c.node, names: []string{key}})
	c.writeRedis(ctx, []string{key}, nil, func(ctx context.Context) error {
		_, err := c.rds.set(ctx, key, record, ttl, tags, msg, false)
		return err
	})
	return nil
}

// SetAndPersist is write-through: it calls persist (which writes the value
// to the system of record) and, only if that succeeds, stores it like Set.
// If persist fails its error is returned wrapped and the new value is not
// cached; the old one is deleted like Delete, since a failed write (a
// timeout after the commit, say) may still have changed the record.
func (c *Cache) SetAndPersist(ctx context.Context, key string, it Item, persist func(ctx context.Context) error) error {
	if err := checkItem(key, it); err != nil {
		return err
	}
	if err := persist(ctx); err != nil {
		_ = c.Delete(ctx, key)
		return fmt.Errorf("cache: persisting %q: %w", key, err)
	}
	return c.Set(ctx, key, it)
}

// Delete removes keys from every layer and from the memory layer of every
// node (invalidation by key). Redis errors are counted, not returned.
func (c *Cache) Delete(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	for _, k := range keys {
		if k == "" {
			return ErrInvalidKey
		}
	}
	for _, k := range keys {
		c.slot(k).Add(1)
		c.mem.delete(k)
	}
	if c.rds == nil {
		return nil
	}
	keys = slices.Clone(keys)
	msg := encodeMessage(message{kind: msgKeys, node: c.node, names: keys})
	c.writeRedis(ctx, keys, nil, func(ctx context.Context) error { return c.rds.del(ctx, keys, msg) })
	return nil
}

// InvalidateTags removes every entry carrying one of tags from every layer
// and from the memory layer of every node. Redis errors are counted, not
// returned.
func (c *Cache) InvalidateTags(ctx context.Context, tags ...string) error {
	if len(tags) == 0 {
		return nil
	}
	if slices.Contains(tags, "") {
		return fmt.Errorf("%w: empty tag", ErrInvalidTag)
	}
	c.tagSeq.Add(1)
	c.mem.invalidateTags(tags)
	if c.rds == nil {
		return nil
	}
	tags = slices.Clone(tags)
	msg := encodeMessage(message{kind: msgTags, node: c.node, names: tags})
	c.writeRedis(ctx, nil, tags, func(ctx context.Context) error { return c.rds.invalidateTags(ctx, tags, msg) })
	return nil
}

// GetOrFetch returns key's value from memory, else from Redis, else from
// fetch, storing what it fetched in both layers. Concurrent callers for one
// key on this node share one load; across nodes, a Redis lock makes the
// others wait up to Config.LockWait for the first node's value, then fetch
// anyway. Only fetch's error (wrapped) or ctx's is returned; Redis errors
// are counted in Stats.
func (c *Cache) GetOrFetch(ctx context.Context, key string, fetch Fetcher) (Item, error) {
	if key == "" {
		return Item{}, ErrInvalidKey
	}
	if e, now, ok := c.mem.get(key, c.outageStart.Load(), c.cfg.OutageMaxStale); ok {
		return Item{Value: e.value, TTL: time.Duration(e.expiresAt - now), Tags: e.tags}, nil
	}
	it, err, joined := c.flight.do(ctx, key, func(ctx context.Context) (Item, error) {
		return c.load(ctx, key, fetch)
	})
	if joined {
		c.coalesced.Add(1)
	}
	return it, err
}

// load runs once per key per node at a time: Redis, then the fetch lock,
// then fetch.
func (c *Cache) load(ctx context.Context, key string, fetch Fetcher) (Item, error) {
	if c.redisUsable() {
		if it, ok := c.getRedis(ctx, key); ok {
			return it, nil
		}
		token := c.node + ":" + strconv.FormatUint(c.lockSeq.Add(1), 10)
		deadline := time.Now().Add(c.cfg.LockWait)
	lock:
		for {
			locked, err := c.rds.lock(ctx, key, token, c.cfg.LockTTL)
			if err != nil {
				c.redisFailed(ctx, err)
				break
			}
			if locked {
				defer func() {
					uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
					defer cancel()
					if err := c.rds.unlock(uctx, key, token); err != nil {
						c.redisFailed(uctx, err)
					}
				}()
				break
			}
			c.lockWaits.Add(1)
			it, res := c.waitForFill(ctx, key, deadline)
			switch res {
			case fillFound:
				return it, nil
			case fillLockGone:
				continue // the holder gave up without a value: take over
			case fillTimeout:
				c.lockTimeouts.Add(1)
			}
			if ctx.Err() != nil {
				return Item{}, ctx.Err()
			}
			break lock
		}
	}

	snap := c.snapshot(key)
	c.fetches.Add(1)
	it, err := callFetch(ctx, fetch, key)
	if err == nil {
		err = checkItem(key, it)
	}
	if err != nil {
		c.fetchErrors.Add(1)
		return Item{}, fmt.Errorf("cache: fetching %q: %w", key, err)
	}
	it.TTL = c.ttl(it.TTL)
	if it.Value == nil {
		it.Value = []byte{}
	}
	if c.snapshot(key) != snap {
		return it, nil // invalidated while fetching: serve it, cache nothing
	}
	if c.redisUsable() {
		// NX: a value someone wrote while we fetched is newer than ours.
		stored, err := c.rds.set(ctx, key, encodeRecord(it.Value, it.Tags), it.TTL, it.Tags, nil, true)
		if err != nil {
			c.redisFailed(ctx, err)
		} else if !stored {
			return it, nil
		}
	}
	c.fillMemory(key, it.Value, it.Tags, it.TTL, snap)
	return it, nil
}

func callFetch(ctx context.Context, f Fetcher, key string) (it Item, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrFetchPanicked, r)
		}
	}()
	return f.Fetch(ctx, key)
}

type fillResult int

const (
	fillFound    fillResult = iota // the value appeared in Redis
	fillLockGone                   // the lock was released without a value
	fillTimeout                    // the deadline passed
	fillGaveUp                     // ctx ended or Redis failed
)

// waitForFill polls Redis for the value another node is fetching under the
// lock, until the value appears, the lock is released, or deadline passes.
func (c *Cache) waitForFill(ctx context.Context, key string, deadline time.Time) (Item, fillResult) {
	pause := 2 * time.Millisecond
	for {
		wait := min(pause, time.Until(deadline))
		if wait <= 0 {
			return Item{}, fillTimeout
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Item{}, fillGaveUp
		case <-t.C:
		}
		if !c.redisUsable() {
			return Item{}, fillGaveUp
		}
		if it, ok := c.getRedis(ctx, key); ok {
			return it, fillFound
		}
		held, err := c.rds.locked(ctx, key)
		if err != nil {
			c.redisFailed(ctx, err)
			return Item{}, fillGaveUp
		}
		if !held {
			return Item{}, fillLockGone
		}
		pause = min(pause*2, 50*time.Millisecond)
	}
}

// writeRedis runs a Redis write, or remembers its keys and tags for the
// recovery if Redis is down or the write fails.
func (c *Cache) writeRedis(ctx context.Context, keys, tags []string, op func(context.Context) error) {
	if c.rememberIfOutage(keys, tags) {
		return
	}
	err := op(ctx)
	if err == nil {
		c.invalSent.Add(1)
		return
	}
	if ctx.Err() != nil {
		// The caller gave up; whether the write happened is unknown, and
		// a half-done write leaves other nodes a stale value: redo it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		err = op(rctx)
		cancel()
		if err == nil {
			c.invalSent.Add(1)
			return
		}
	}
	// Under dirtyMu, so that a recovery cannot end the outage between
	// the two.
	c.dirtyMu.Lock()
	c.markOutage(err)
	c.rememberLocked(keys, tags)
	c.dirtyMu.Unlock()
}

// redisFailed records a failed Redis read as an outage, unless the failure
// says nothing about Redis being reachable: a read cancelled by its caller,
// an error reply (WRONGTYPE, LOADING, …) or a record that does not decode.
// (The layer has counted the error.)
func (c *Cache) redisFailed(ctx context.Context, err error) {
	var reply redis.Error
	if ctx.Err() != nil || errors.Is(err, errCorrupt) || errors.As(err, &reply) {
		return
	}
	c.markOutage(err)
}

func (c *Cache) markOutage(err error) {
	if c.outageStart.CompareAndSwap(0, c.nowNano()) {
		c.outages.Add(1)
		c.cfg.Logger.Warn("cache: redis unreachable, serving from memory and fetcher", "cache", c.cfg.Name, "err", err)
	}
}

// rememberIfOutage records keys and tags as dirty if Redis is in outage,
// atomically with respect to the recovery clearing the outage.
func (c *Cache) rememberIfOutage(keys, tags []string) bool {
	if c.outageStart.Load() == 0 {
		return false
	}
	c.dirtyMu.Lock()
	defer c.dirtyMu.Unlock()
	if c.outageStart.Load() == 0 {
		return false
	}
	c.rememberLocked(keys, tags)
	return true
}

func (c *Cache) rememberLocked(keys, tags []string) {
	if c.dirtyOverflow {
		return
	}
	if len(c.dirtyKeys)+len(c.dirtyTags)+len(keys)+len(tags) > c.maxDirty {
		c.dirtyOverflow = true
		clear(c.dirtyKeys)
		clear(c.dirtyTags)
		return
	}
	for _, k := range keys {
		c.dirtyKeys[k] = struct{}{}
	}
	for _, t := range tags {
		c.dirtyTags[t] = struct{}{}
	}
}
