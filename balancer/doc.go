// Package balancer owns the backends of an upstream and decides which one
// serves the next request.
//
// A Pool holds the backends of one upstream, each with its weight, state
// (healthy, unhealthy, draining), requests in flight, EWMA response time and
// consecutive failures. A Picker chooses among the backends that may take
// traffic (round-robin, smooth weighted round-robin, least-connections,
// least-response-time, ip-hash by rendezvous hashing); every algorithm
// skips unhealthy, draining and excluded backends, and Pick returns
// ErrNoBackend when none is left.
//
// Health: backends start healthy. Run performs the active health checks
// (HealthConfig); Done records the outcome of real requests, and passive
// checks (PassiveConfig) eject a backend that fails too often in a row, for
// a time that grows with repeated ejections, never more than a share of the
// pool at once. Ejections end on a timer, so they do not depend on Run.
//
// Draining: Drain stops new requests to a backend and leaves it listed;
// Remove drains it and takes it out of the pool once its requests in flight
// are done or after the drain timeout, from a goroutine of its own (without
// Run). Update applies a reloaded configuration while traffic flows,
// keeping the state of the backends that stay.
//
// Every state change is logged (slog: upstream, backend, from, to, reason)
// and counted; Status and NewCollector expose the state to the admin API
// and Prometheus.
//
// Concurrency: every method of Pool and Backend is safe to call from many
// goroutines at once. Pick and Done are on the request path: they take no
// lock (weighted-round-robin takes a small one) and do not allocate.
package balancer
