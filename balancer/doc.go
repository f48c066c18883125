// Package balancer owns the backends of an upstream and decides which one
// serves the next request.
//
// A Pool holds the backends of one upstream, each with its weight, state
// (healthy, unhealthy, draining), requests in flight, EWMA response time and
// consecutive failures. A Picker chooses among the backends that may take
// traffic; the pool runs active health checks and records passive health from
// the outcomes the proxy reports through Done.
//
// Every method of Pool and Backend is safe to call from many goroutines at
// once; Pick and Done are on the request path and do not allocate.
package balancer
