// Package replica routes PostgreSQL statements over a primary and its
// streaming replicas, on pgx v5 (one pgxpool per node).
//
// Open takes the DSNs of every node and discovers the roles: each node is
// asked pg_is_in_recovery(), and the one that is not in recovery is the
// primary. The check repeats every Config.CheckInterval, and early after a
// statement finds a node gone, so a promoted replica becomes the primary
// and a lost or demoted primary is dropped without restarting the app. If
// more than one node claims to be the primary, none is used for writes
// until the conflict is resolved: writes fail rather than risk being lost.
//
// Writes: Exec, Begin and BeginTx (and every statement of a transaction)
// run on the primary. With no known or reachable primary they fail at once
// with an error wrapping ErrNoPrimary; nothing is queued.
//
// Reads: Query and QueryRow send a statement that IsReadOnly accepts to a
// replica in the read rotation (RoundRobin or LeastLatency), else to the
// primary, or fail with ErrNoReplica when Config.NoFallback is set. See
// IsReadOnly for the exact rule; every other statement goes to the primary,
// and Primary(ctx) forces the primary for anything. A read that fails
// before its first row because its node went away is retried once on
// another node. Read acquires a read connection for several statements.
//
// Lag: every check measures each replica's lag in bytes (the primary's WAL
// insert position minus the replica's pg_last_wal_replay_lsn(), the
// pg_wal_lsn_diff done in Go across the two servers) and in seconds (how
// long ago the checks first saw the primary past the replica's replayed
// position; unlike now() - pg_last_xact_replay_timestamp(), this does not
// grow on an idle primary). A replica over Config.MaxLag or
// Config.MaxLagBytes leaves the read rotation and comes back when it has
// caught up.
//
// Consistency: without a token, reads are eventually consistent: a read
// right after a write may run on a replica that has not replayed it yet.
// For read-your-writes, take a Token after the write commits
// (Cluster.Token), carry it (WithToken in a context, or its String form in
// a cookie, back through ParseToken), and reads with it go only to a
// replica whose replayed position, as of its last check, is at or past the
// token, else to the primary.
//
// Observability: Status returns a plain struct per node (role, health,
// lag, queries, errors, pool use) and Collector a Prometheus collector of
// the same (scaleout_db_*), for the caller to register.
//
// A Cluster is safe for concurrent use by many goroutines. The rows,
// row and transaction values it returns are, as in pgx, for one goroutine.
package replica
