package balancer

import (
	"hash/fnv"
	"math"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// State is the health state of a backend.
type State int32

const (
	// Healthy backends take new requests.
	Healthy State = iota
	// Unhealthy backends failed their active health checks or were ejected
	// by passive checks; they take no new requests until they recover.
	Unhealthy
	// Draining backends take no new requests; their in-flight requests
	// finish. A drained backend stays listed; a removed one leaves the pool
	// once drained.
	Draining

	numStates = 3
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
// atomically on the request path. A Backend belongs to at most one Pool.
type Backend struct {
	// ID identifies the backend within its pool: host:port of its URL.
	ID string
	// URL is the backend's base URL (scheme and host; a path is ignored).
	URL *url.URL
	// Weight is the relative share of traffic asked for when the backend
	// was created; values below 1 mean 1. The pool copies it when the
	// backend joins and never writes this field afterwards (so reading it
	// is always race-free); the weight in effect after (*Pool).Update is
	// reported by CurrentWeight.
	Weight int

	// Read on the request path.
	state       atomic.Int32
	active      atomic.Int64
	weight      atomic.Int64  // weight in effect
	ewmaNanos   atomic.Uint64 // math.Float64bits of the EWMA latency in ns; 0 = no sample yet
	consecFails atomic.Int64
	served      atomic.Uint64
	outcomes    [numOutcomes]atomic.Uint64
	wrrCurrent  atomic.Int64 // smooth weighted round-robin's current weight
	seed        atomic.Uint64

	// Counted for metrics.
	ejections atomic.Uint64
	changes   [numStates]atomic.Uint64

	mu sync.Mutex // guards the fields below
	// Reasons for the state; draining wins over the others.
	draining, activeDown, ejected bool
	// idle is made when draining starts and closed once no request is in
	// flight (or when draining is called off); idleClosed records that.
	idle       chan struct{}
	idleClosed bool
	// removing marks a backend that leaves the pool once drained;
	// removeGen tells a removal that was called off from the current one.
	// Both are guarded by the pool's mu, not b.mu.
	removing  bool
	removeGen uint64
	// Active health checks.
	checkOK, checkFail int
	lastCheckErr       string
	// Passive ejection.
	ejectStreak int       // ejections in a row, multiplies EjectFor
	ejectEnd    time.Time // when the last ejection ended
	stopEject   func() bool
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
	b := &Backend{ID: u.Host, URL: u, Weight: weight}
	b.weight.Store(int64(weight))
	b.seed.Store(hashID(b.ID))
	return b, nil
}

// hashID derives a backend's rendezvous-hashing seed from its ID, so that a
// backend that leaves and comes back gets the same clients.
func hashID(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return mix64(h.Sum64())
}

// State reports the backend's current state.
func (b *Backend) State() State { return State(b.state.Load()) }

// Available reports whether the backend may take a new request.
func (b *Backend) Available() bool { return b.State() == Healthy }

// Active reports the number of requests in flight.
func (b *Backend) Active() int64 { return b.active.Load() }

// CurrentWeight reports the weight in effect: Weight, or the weight given
// by the last (*Pool).Update that kept this backend.
func (b *Backend) CurrentWeight() int { return int(b.weight.Load()) }

// EWMA reports the exponentially weighted moving average of response time;
// zero until the first sample, which sets it. Each further sample moves the
// average by 0.2 of the difference (a sample's weight halves about every 3
// requests), so it follows roughly the last 10 requests.
func (b *Backend) EWMA() time.Duration {
	return time.Duration(math.Float64frombits(b.ewmaNanos.Load()))
}

// ConsecutiveFailures reports failures since the last success.
func (b *Backend) ConsecutiveFailures() int64 { return b.consecFails.Load() }

// Served reports the number of requests this backend has completed,
// whatever their outcome.
func (b *Backend) Served() uint64 { return b.served.Load() }

// Ejections reports how many times passive checks ejected the backend.
func (b *Backend) Ejections() uint64 { return b.ejections.Load() }

// LastCheckError reports the error of the last active health check, or ""
// when it passed or none ran yet.
func (b *Backend) LastCheckError() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastCheckErr
}

// stateLocked derives the state from its reasons; b.mu must be held.
func (b *Backend) stateLocked() State {
	switch {
	case b.draining:
		return Draining
	case b.activeDown || b.ejected:
		return Unhealthy
	}
	return Healthy
}

// acquire counts a request in flight and reports whether the backend may
// still take it; if not, the caller must call release.
func (b *Backend) acquire() bool {
	b.active.Add(1)
	// The state is read after the increment: a concurrent drain either sees
	// this request in flight or is seen here.
	return b.Available()
}

// release ends a request in flight and wakes a drain waiting for the last.
func (b *Backend) release() {
	if b.active.Add(-1) == 0 && b.State() == Draining {
		b.mu.Lock()
		b.signalIdleLocked()
		b.mu.Unlock()
	}
}

// signalIdleLocked closes idle when the backend drains and has no request
// in flight; b.mu must be held.
func (b *Backend) signalIdleLocked() {
	if b.draining && b.idle != nil && !b.idleClosed && b.active.Load() == 0 {
		close(b.idle)
		b.idleClosed = true
	}
}
