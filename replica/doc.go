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
// One server listed twice in Config.Nodes (as 127.0.0.1 and as localhost,
// say) is recognised by its identity (system identifier and postmaster
// start time) and used once; listed under two database names, writes are
// refused with an error saying so. Open fails at once, with ctx's error,
// if ctx is already done.
//
// Lost connections: a statement that loses its connection (the server
// closed it: pg_terminate_backend, a restart, a pooler or firewall dropping
// it) fails with pgx's own error, since it may or may not have run; one
// that fails before anything was sent (pgconn.SafeToRetry) is retried once
// on another connection. A lost connection is not taken for a lost node: a
// fresh connection (bounded by Config.CheckTimeout, at most 1s), off the
// caller's path, confirms the node gone before it leaves routing; until
// then writes keep going to it and reads prefer other nodes. A failed
// connect takes the node out at once. So when the primary really dies, the
// first write on each of its pooled connections may return the raw pgx
// error (EOF, SQLSTATE 57P01...), not ErrNoPrimary; then writes fail fast
// with ErrNoPrimary until a primary is found.
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
// The rule cannot see inside functions: a SELECT calling a user-defined
// function that writes is sent to a replica and fails there ("read-only
// transaction"); send it under Primary(ctx). Administration functions that
// act on the server they run on (pg_terminate_backend, pg_cancel_backend,
// pg_reload_conf, set_config, pg_stat_reset*, pg_wal_replay_*...) go to
// the primary; to act on one replica, connect to it directly.
//
// Statement cache: IsReadOnly's answer is cached per Cluster for up to
// 4096 distinct statements (emptied and refilled when full). Statements up
// to 1 KiB are keyed by their text, longer ones by a 128-bit hash of it
// and its length, so the cache holds at most about 4 MiB of statement text;
// a long statement is classified once, then costs a hash of its text per
// call (about 1 µs for 5 KB). An app that runs more than 4096 distinct
// statements in turn (literals inlined instead of parameters) re-classifies
// them as the cache refills.
//
// Deadlines: a replica that stops answering without closing its
// connections (a frozen VM, a network partition) holds a read until the
// read's context ends, and only then is it retried elsewhere or reported;
// give reads a context deadline.
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
// token, else to the primary. A token is not authenticated: a forged or
// far-future one in a cookie sends that client's reads to the primary
// until the primary's WAL gets there, which may be never. Sign the cookie (an HMAC), or
// discard tokens older than the session, if clients are not trusted. A
// token does not survive a failover that lost writes: after an
// asynchronous replica is promoted without the old primary's last WAL, a
// token from before may point past the new primary's history, and those
// reads go to the primary (where the write is not, either); the write
// itself is gone.
//
// Observability: Status returns a plain struct per node (role, health,
// lag, queries, errors, pool use) and Collector a Prometheus collector of
// the same (scaleout_db_*), for the caller to register.
//
// A Cluster is safe for concurrent use by many goroutines. The rows,
// row and transaction values it returns are, as in pgx, for one goroutine.
package replica
