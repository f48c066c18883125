// Package autoscale grows and shrinks the instance pool of an upstream with
// its load: a target-tracking Controller decides how many instances there
// should be, and a Provider runs them.
//
// # Controller
//
// Each Interval the Controller measures one metric over the ready instances
// of its upstream — inflight (average requests in flight per instance,
// sampled four times per interval), rps (requests completed per second per
// instance), latency_p95 (from a LatencySource such as Latencies, fed by
// the proxy) or cpu (percent of one core per instance, measured by the
// provider) — and recommends
//
//	desired = ceil(current × observed / target)
//
// where current counts the ready instances only. Inside the tolerance band
// (default ±10 % of the target) nothing changes. A recommendation above
// the target never scales in and one below it never scales out. Scale-out
// is fast but bounded by a step policy (by default at most +100 % or +4
// instances, whichever is more, per 15 s); scale-in is slow: the highest
// recommendation of the stabilization window (default 5 min) wins, so that
// a noisy load does not flap the pool (an optional scale-out window does the
// same for short spikes). The result is clamped to [Min, Max]. Before the
// first scale-in the controller observes for one window: the starting size
// counts as a recommendation.
// Instances that are still starting, not yet ready or unhealthy in the
// balancer neither count as capacity nor feed the metric. A missing metric
// (no ready instance, no latency sample yet) holds the current size: it
// never triggers a scale-in.
//
// Every change of the desired size, and every failure or crash reported by
// the provider, is an Event with its inputs: logged with slog, kept in a
// bounded list (Status, for GET /api/autoscale) and counted by the
// Collector. Decisions that change nothing are logged at Debug level, and
// the last one is in Status.LastDecision. Update applies a reloaded
// configuration without restarting instances.
//
// # Providers
//
// Process (the default) runs copies of a command as child processes on free
// loopback ports, with PORT and INSTANCE_ID in their environment. A new
// instance joins the balancer pool only once its health check passes; on
// scale-in it is drained through the pool (Remove, WaitDrained), then sent
// SIGTERM, then SIGKILL after a grace period, always to its whole process
// group. A crashed instance is replaced; a command that fails to start or
// keeps crashing is retried with exponential backoff and reported. Children
// are started with Pdeathsig=SIGKILL from one locked OS thread that lives
// as long as the process, so none outlives the gateway, even when the
// gateway is killed. (Pdeathsig reaches the child only: what an instance
// starts itself is killed with its group on a normal stop, but survives a
// SIGKILL of the gateway unless the instance sees to it. Give the app's own
// binary as the command, not a launcher such as "go run".) The cpu metric
// is read from /proc/<pid>/stat for the whole process group.
//
// The kubernetes provider (a Deployment's scale subresource and its
// EndpointSlices) is in the subpackage autoscale/kubernetes, so that only
// programs that use it depend on client-go.
//
// # Concurrency
//
// Every exported method of Controller, Process and Latencies is safe to
// call from many goroutines at once. A Controller and its Provider are
// started once, by Controller.Run.
package autoscale
