// Package testenv starts the real servers that the tests and benchmarks of
// scaleout need beyond the shared ones already running on the machine.
//
// For PostgreSQL, NewPostgresCluster (and StartPostgresCluster, its
// testing.TB wrapper) runs a primary and N streaming replicas of its own on
// free loopback ports in a temporary directory: initdb, pg_basebackup -R,
// each server running as the `postgres` user. The process must run as root
// (the servers are started with that user's credentials) or as the postgres
// user itself; anything else is a clear error, never a silent skip. The
// servers are tuned for speed, not durability (fsync=off,
// synchronous_commit=off, full_page_writes=off, small shared_buffers): they
// are throw-away test servers. Each server is killed when the test process
// dies (parent-death signal on the postmaster; its children exit when they
// see it gone; the next cluster started sweeps the directory left behind),
// and Close kills them all and removes the directory.
//
// Starting a cluster costs seconds: share one between the tests of a package
// (start it lazily from the first test that needs it, close it in TestMain
// after m.Run).
//
// A PostgresCluster is safe for concurrent use by multiple goroutines; its
// node-control methods (Stop, Kill, Start, Promote...) serialise per cluster.
package testenv
