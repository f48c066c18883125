// Package shard splits data over shards, each a replica cluster (a
// PostgreSQL primary and its replicas), and adds shards while the app
// runs.
//
// # Keyspaces and strategies
//
// A keyspace is a set of keys placed by one Map, stored with a version in
// a metadata database (Store). Three strategies:
//
//   - Hash: a key's bucket is Key.Hash mod the number of buckets (4096 by
//     default, fixed for the keyspace's life); Map.Buckets names each
//     bucket's shard. The hash is XXH64 (github.com/cespare/xxhash/v2,
//     seed 0) of the key's bytes (big-endian for integers), stable across
//     processes and releases. Adding a shard moves whole buckets, about
//     1/(N+1) of the data, where hash mod N would move N/(N+1).
//   - RangeStrategy: sorted, non-overlapping [From, To) ranges of integer
//     or string keys; a key outside every range is ErrOutOfRange, never
//     sent to some default shard. Map.SplitRange splits a range (the map
//     only: it moves no rows).
//   - Directory: a key → shard table in the metadata database, cached in
//     memory; an unknown key is placed on the shard with the fewest keys,
//     in one transaction whose INSERT … ON CONFLICT DO NOTHING makes
//     concurrent placements of one key, in any process, agree.
//
// # Routing
//
// A Router follows its keyspace's latest map: LISTEN/NOTIFY announces a
// new version at once and a poll (Config.PollInterval) catches a missed
// one, so every node picks it up without a restart. Routing reads an
// immutable compiled map through an atomic pointer: no lock, no
// allocation (see BenchmarkFor). For gives a key's replica.Cluster (writes
// to its primary, reads to its replicas); ForKeys gives the one shard of
// several keys or refuses with ErrCrossShard; Do runs a function on the
// key's shard and retries it when a move refused the write. Keys of one
// bucket live together, so a transaction over one key's rows is a
// single-shard transaction.
//
// ScatterGather (and Router.All) run a function on every shard at once,
// each bounded by Config.ShardTimeout; a failed shard is reported in its
// Result and marks the Gathered Partial, the others are returned. Concat,
// Sum and MergeOrdered merge the results.
//
// # Rebalancing
//
// Tables whose rows follow a hash keyspace are registered
// (Store.RegisterTable) with their key column and a bucket column the app
// fills with Router.Bucket(key). Rebalancer.AddShard adds a shard and
// journals the plan; Rebalancer.Run moves each bucket online:
//
//  1. on the source shard a BEFORE trigger on every registered table
//     (installed by Run) logs the keys written to a bucket whose fence is
//     "moving" in scaleout_shard_changes; after setting a fence, Run waits
//     for the transactions that had written to the tables before it (their
//     RowExclusiveLock in pg_locks) to end, so no write that missed the
//     fence can commit afterwards; new writers are never blocked;
//  2. the bucket's rows are copied (COPY out of the source piped into
//     COPY into the target);
//  3. catch-up passes re-copy the logged keys (delete on the target, copy
//     the source's current rows) until few changes remain;
//  4. the target's replicas are waited for until they have replayed the
//     copy (RebalanceConfig.ReplicaWait), here and again before the flip,
//     so that reads routed to them after the flip find every row;
//     cutover: the map is published with the bucket frozen (For waits),
//     the source fence turns "frozen" (the trigger refuses writes with
//     SQLSTATE SH001, so nothing can slip in), a last catch-up empties the
//     log, and one metadata transaction publishes the map with the bucket
//     on its new shard and journals the move as flipped. The write hold
//     lasts from the frozen map to the flip;
//  5. after RebalanceConfig.ReadGrace (1s by default), during which a
//     node that has not loaded the new map still reads the old rows (its
//     writes are refused and retried by Do), the source fence turns
//     "moved" (writes refused with SH002) and the old rows are deleted.
//
// Every phase is journaled in the metadata database. A move failing
// before its flip is rolled back (target copies deleted, fence removed,
// map unfrozen): the old shard keeps serving the bucket, nothing is lost.
// After a crash (or a cancelled context), the next Run finishes moves
// that were flipped and rolls back and redoes the others. One process at
// a time rebalances a keyspace (an advisory lock).
//
// Writers must use READ COMMITTED (PostgreSQL's default) on registered
// tables: a REPEATABLE READ transaction that took its snapshot before a
// fence changed does not see it.
//
// # Concurrency
//
// Router, Store and Rebalancer are safe for concurrent use by many
// goroutines. Maps returned by Router.Map are copies.
package shard
