package balancer

import (
	"math"
	"net/url"
	"sync/atomic"
	"time"
)

// State is the health state of a backend.
type State int32

const (
	// Healthy backends take new requests.
	Healthy State = iota
	// Unhealthy backends failed their health checks or were ejected by
	// passive checks; they take no new requests until they recover.
	Unhealthy
	// Draining backends take no new requests; their in-flight requests
	// finish, then they leave the pool.
	Draining
)

// String returns the state's lowercase name, as shown by the admin API.
func (s State) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	case Draining:
		return "draining"
	}
	return "unknown"
}

// Backend is one instance of an upstream. Its counters are updated
// atomically on the request path.
type Backend struct {
	// ID identifies the backend within its pool: host:port of its URL.
	ID string
	// URL is the backend's base URL (scheme and host; a path is ignored).
	URL *url.URL
	// Weight is the relative share of traffic for weighted algorithms; at least 1.
	Weight int

	state       atomic.Int32
	active      atomic.Int64
	ewmaNanos   atomic.Uint64 // math.Float64bits of the EWMA latency in ns; 0 = no sample yet
	consecFails atomic.Int64
	served      atomic.Uint64
	failures    atomic.Uint64
}

// NewBackend returns a healthy backend for rawURL with the given weight
// (values below 1 mean 1).
func NewBackend(rawURL string, weight int) (*Backend, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if weight < 1 {
		weight = 1
	}
	return &Backend{ID: u.Host, URL: u, Weight: weight}, nil
}

// State reports the backend's current state.
func (b *Backend) State() State { return State(b.state.Load()) }

// Available reports whether the backend may take a new request.
func (b *Backend) Available() bool { return b.State() == Healthy }

// Active reports the number of requests in flight.
func (b *Backend) Active() int64 { return b.active.Load() }

// EWMA reports the exponentially weighted moving average of response time;
// zero until the first sample.
func (b *Backend) EWMA() time.Duration {
	return time.Duration(math.Float64frombits(b.ewmaNanos.Load()))
}

// ConsecutiveFailures reports failures since the last success.
func (b *Backend) ConsecutiveFailures() int64 { return b.consecFails.Load() }

// Served reports the number of requests this backend has completed.
func (b *Backend) Served() uint64 { return b.served.Load() }
