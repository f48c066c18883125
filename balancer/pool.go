package balancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoBackend is returned by Pick when no backend may take the request.
var ErrNoBackend = errors.New("no healthy backend")

// ErrUnknownBackend is returned for a backend ID that is not in the pool.
var ErrUnknownBackend = errors.New("unknown backend")

// ErrDuplicateBackend is returned by Add for a backend already in the pool.
var ErrDuplicateBackend = errors.New("backend already in pool")

// Outcome is what happened to a request sent to a backend, as reported to Done.
type Outcome int

const (
	// Success: the backend answered with a status below 500.
	Success Outcome = iota
	// ConnectFailure: the backend could not be reached; nothing was sent.
	ConnectFailure
	// Timeout: the backend did not answer in time.
	Timeout
	// ServerError: the backend answered 5xx.
	ServerError
	// Canceled: the client went away; says nothing about the backend.
	Canceled
)

// Config configures a Pool. The zero value works: round-robin, no active
// health checks, passive checks on with their defaults, 30 s drain timeout.
type Config struct {
	// Algorithm is one of round-robin (the default), weighted-round-robin,
	// least-connections, least-response-time, ip-hash.
	Algorithm string
	// Health configures active checks. With an empty Path there are none.
	Health HealthConfig
	// Passive configures ejection from real traffic.
	Passive PassiveConfig
	// DrainTimeout bounds how long a removed backend waits for its
	// in-flight requests before it leaves. Default 30 s.
	DrainTimeout time.Duration
	// Logger receives state changes. Default slog.Default().
	Logger *slog.Logger
}

// HealthConfig configures active health checks of every backend of a pool.
type HealthConfig struct {
	// Path is requested on each backend; empty disables active checks.
	Path string
	// Method is the request method. Default GET.
	Method string
	// Interval between checks of one backend. Default 5 s.
	Interval time.Duration
	// Timeout of one check. Default 2 s, and never more than Interval.
	Timeout time.Duration
	// StatusMin and StatusMax bound the expected status. Default 200–399.
	StatusMin, StatusMax int
	// UnhealthyAfter consecutive failures mark a backend unhealthy. Default 3.
	UnhealthyAfter int
	// HealthyAfter consecutive successes mark it healthy again. Default 2.
	HealthyAfter int
}

// PassiveConfig configures ejection of backends that fail real requests.
type PassiveConfig struct {
	// Disabled turns passive checks off.
	Disabled bool
	// Failures in a row (connect errors, timeouts, 5xx) eject a backend. Default 5.
	Failures int
	// EjectFor is the first ejection's length; each further ejection of the
	// same backend lasts one EjectFor longer, up to MaxEjectFor. Default 10 s.
	EjectFor time.Duration
	// MaxEjectFor caps the ejection time. Default 5 min.
	MaxEjectFor time.Duration
	// MaxEjectedPercent caps the share of the pool ejected by passive
	// checks at once. Default 50.
	MaxEjectedPercent int
}

// Pool is the set of backends of one upstream and the algorithm that picks
// among them.
type Pool struct {
	name     string
	cfg      Config
	log      *slog.Logger
	mu       sync.Mutex                // serialises changes to the backend list
	backends atomic.Pointer[[]*Backend] // copy-on-write snapshot read by Pick
	rr       atomic.Uint64
}

// New returns a pool named name over backends.
func New(name string, cfg Config, backends []*Backend) (*Pool, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	p := &Pool{name: name, cfg: cfg, log: cfg.Logger.With("upstream", name)}
	bs := append([]*Backend(nil), backends...)
	p.backends.Store(&bs)
	return p, nil
}

// Name returns the upstream's name.
func (p *Pool) Name() string { return p.name }

// Backends returns the current backends. The slice must not be modified.
func (p *Pool) Backends() []*Backend { return *p.backends.Load() }

// Pick chooses a backend for a request from client, skipping the backends
// in exclude (those already tried for this request), and counts the request
// as in flight on it. Every successful Pick must be followed by one Done.
func (p *Pool) Pick(client netip.Addr, exclude []*Backend) (*Backend, error) {
	bs := p.Backends()
	n := uint64(len(bs))
	if n == 0 {
		return nil, ErrNoBackend
	}
	start := p.rr.Add(1) - 1
	for i := uint64(0); i < n; i++ {
		b := bs[(start+i)%n]
		if b.Available() && !contains(exclude, b) {
			b.active.Add(1)
			return b, nil
		}
	}
	return nil, ErrNoBackend
}

func contains(bs []*Backend, b *Backend) bool {
	for _, x := range bs {
		if x == b {
			return true
		}
	}
	return false
}

// Done reports the end of a request picked on b: its duration and outcome.
func (p *Pool) Done(b *Backend, took time.Duration, outcome Outcome) {
	b.active.Add(-1)
	b.served.Add(1)
}

// Add adds a backend to the pool.
func (p *Pool) Add(b *Backend) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.Backends()
	for _, x := range old {
		if x.ID == b.ID {
			return fmt.Errorf("adding %s to %s: %w", b.ID, p.name, ErrDuplicateBackend)
		}
	}
	bs := append(append([]*Backend(nil), old...), b)
	p.backends.Store(&bs)
	return nil
}

// Run runs active health checks until ctx is done.
func (p *Pool) Run(ctx context.Context) {
	<-ctx.Done()
}
