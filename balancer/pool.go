package balancer

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoBackend is returned by Pick when no backend may take the request:
// the pool is empty, or every backend is unhealthy, draining or excluded.
var ErrNoBackend = errors.New("no healthy backend")

// ErrUnknownBackend is returned for a backend ID that is not in the pool.
var ErrUnknownBackend = errors.New("unknown backend")

// ErrDuplicateBackend is returned by Add for a backend already in the pool.
var ErrDuplicateBackend = errors.New("backend already in pool")

// ErrNotDraining is returned by WaitDrained for a backend that is not
// draining, or whose draining was called off while waiting.
var ErrNotDraining = errors.New("backend is not draining")

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

	numOutcomes = 5
)

// String returns the outcome's lowercase name, as used in metric labels.
func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case ConnectFailure:
		return "connect_failure"
	case Timeout:
		return "timeout"
	case ServerError:
		return "server_error"
	case Canceled:
		return "canceled"
	}
	return "unknown"
}

// ewmaAlpha is the weight of a new latency sample in a backend's EWMA.
const ewmaAlpha = 0.2

// snapshot is what Pick reads: replaced as a whole, never modified.
type snapshot struct {
	cfg      Config // with defaults filled in
	picker   Picker
	log      *slog.Logger
	backends []*Backend
}

// Pool is the set of backends of one upstream and the algorithm that picks
// among them.
type Pool struct {
	name   string
	clock  clock
	randN  func(n uint64) uint64 // nil: math/rand/v2
	client *http.Client          // active health checks

	snap    atomic.Pointer[snapshot]
	mu      sync.Mutex    // serialises changes to the backend list, config and ejections
	changed chan struct{} // wakes Run after a change
	running atomic.Bool   // Run is running
}

// New returns a pool named name over backends, with cfg's defaults filled
// in. It fails on an invalid cfg (an unknown algorithm is named in the
// error), a nil backend or two backends with the same ID.
func New(name string, cfg Config, backends []*Backend) (*Pool, error) {
	return newPool(name, cfg, backends, realClock{}, nil)
}

func newPool(name string, cfg Config, backends []*Backend, clk clock, randN func(uint64) uint64) (*Pool, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", name, err)
	}
	if err := checkBackends(backends); err != nil {
		return nil, fmt.Errorf("upstream %s: %w", name, err)
	}
	picker, _ := newPicker(cfg.Algorithm, randN)
	p := &Pool{
		name:    name,
		clock:   clk,
		randN:   randN,
		client:  newHealthClient(),
		changed: make(chan struct{}, 1),
	}
	bs := make([]*Backend, 0, len(backends))
	for _, b := range backends {
		adopt(b)
		bs = append(bs, b)
	}
	p.snap.Store(&snapshot{cfg: cfg, picker: picker, log: cfg.Logger.With("upstream", name), backends: bs})
	return p, nil
}

// checkBackends rejects nil backends, backends without an ID or URL and
// duplicate IDs.
func checkBackends(bs []*Backend) error {
	seen := make(map[string]bool, len(bs))
	for i, b := range bs {
		if err := checkBackend(b); err != nil {
			return fmt.Errorf("backend %d: %w", i, err)
		}
		if seen[b.ID] {
			return fmt.Errorf("backend %s: %w", b.ID, ErrDuplicateBackend)
		}
		seen[b.ID] = true
	}
	return nil
}

func checkBackend(b *Backend) error {
	switch {
	case b == nil:
		return errors.New("nil backend")
	case b.ID == "":
		return errors.New("backend without an ID")
	case b.URL == nil:
		return fmt.Errorf("backend %s without a URL", b.ID)
	}
	return nil
}

// adopt prepares a backend for joining a pool: weight in effect and
// hashing seed, for backends not made by NewBackend.
func adopt(b *Backend) {
	if b.weight.Load() == 0 {
		b.weight.Store(int64(max(b.Weight, 1)))
	}
	if b.seed.Load() == 0 {
		b.seed.Store(hashID(b.ID))
	}
}

// Name returns the upstream's name.
func (p *Pool) Name() string { return p.name }

// Config returns the pool's configuration with its defaults filled in.
func (p *Pool) Config() Config { return p.snap.Load().cfg }

// Backends returns the current backends, draining ones included. The
// slice must not be modified.
func (p *Pool) Backends() []*Backend { return p.snap.Load().backends }

// Backend returns the backend with the given ID, or nil.
func (p *Pool) Backend(id string) *Backend {
	for _, b := range p.Backends() {
		if b.ID == id {
			return b
		}
	}
	return nil
}

// Pick chooses a backend for a request from client, skipping the backends
// in exclude (those already tried for this request), and counts the request
// as in flight on it. Every successful Pick must be followed by one Done.
// It returns ErrNoBackend when no backend may take the request. It does
// not allocate.
func (p *Pool) Pick(client netip.Addr, exclude []*Backend) (*Backend, error) {
	s := p.snap.Load()
	for range len(s.backends) + 1 {
		b := s.picker.Pick(s.backends, client, exclude)
		if b == nil {
			break
		}
		if b.acquire() {
			return b, nil
		}
		// It went unavailable between the pick and the count; the picker
		// skips it now.
		b.release()
	}
	return nil, ErrNoBackend
}

// Done reports the end of a request picked on b: its duration and outcome.
// It ends the request in flight and counts it as served. Every outcome but
// Canceled and ConnectFailure feeds the latency EWMA (a refused connection
// is fast and would make a dead backend look best); Success resets the
// consecutive failures; ConnectFailure, Timeout and ServerError add one and
// may get the backend ejected (see PassiveConfig); Canceled says nothing
// about the backend.
func (p *Pool) Done(b *Backend, took time.Duration, outcome Outcome) {
	b.release()
	b.served.Add(1)
	if outcome >= 0 && outcome < numOutcomes {
		b.outcomes[outcome].Add(1)
	}
	switch outcome {
	case Success:
		b.observe(took)
		if b.consecFails.Load() != 0 {
			b.consecFails.Store(0)
		}
	case Timeout, ServerError:
		b.observe(took)
		p.failed(b)
	case ConnectFailure:
		p.failed(b)
	}
}

// observe adds a latency sample to the EWMA.
func (b *Backend) observe(took time.Duration) {
	sample := float64(max(took, 1))
	for {
		old := b.ewmaNanos.Load()
		e := math.Float64frombits(old)
		if e == 0 {
			e = sample
		} else {
			e += ewmaAlpha * (sample - e)
		}
		if b.ewmaNanos.CompareAndSwap(old, math.Float64bits(e)) {
			return
		}
	}
}

// Add adds a backend to the pool; it takes traffic at once (see the
// package doc on health). Adding the ID of a backend that is being removed
// replaces it: the old one leaves at once (its requests in flight finish
// normally). Any other duplicate ID is refused with ErrDuplicateBackend.
func (p *Pool) Add(b *Backend) error {
	if err := checkBackend(b); err != nil {
		return fmt.Errorf("adding backend to %s: %w", p.name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range p.Backends() {
		if x.ID != b.ID {
			continue
		}
		if x == b || !x.removing {
			return fmt.Errorf("adding %s to %s: %w", b.ID, p.name, ErrDuplicateBackend)
		}
		p.dropLocked(x, "replaced by a new backend with the same ID")
	}
	adopt(b)
	s := *p.snap.Load()
	s.backends = append(append(make([]*Backend, 0, len(s.backends)+1), s.backends...), b)
	p.snap.Store(&s)
	s.log.Info("backend added", "backend", b.ID, "url", b.URL.String(), "weight", b.CurrentWeight())
	p.notify()
	return nil
}

// Update replaces the pool's configuration and backend list, for a config
// reload, while Pick, Done and Run go on. Backends whose ID stays keep
// their *Backend (state, counters, EWMA) and take the new weight (unless
// their URL changed: then the new one replaces the old at once); a staying
// backend that was being removed is taken back (draining called off); one
// drained by Drain stays draining. New backends are added; backends that
// are no longer listed are removed as by Remove. The algorithm, health and
// passive settings take effect at once; Run restarts the health checks
// with the new settings. On error nothing changes.
func (p *Pool) Update(cfg Config, backends []*Backend) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("upstream %s: %w", p.name, err)
	}
	if err := checkBackends(backends); err != nil {
		return fmt.Errorf("upstream %s: %w", p.name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.snap.Load()
	byID := make(map[string]*Backend, len(old.backends))
	for _, b := range old.backends {
		byID[b.ID] = b
	}
	next := &snapshot{cfg: cfg, picker: old.picker, log: cfg.Logger.With("upstream", p.name)}
	if cfg.Algorithm != old.cfg.Algorithm {
		next.picker, _ = newPicker(cfg.Algorithm, p.randN)
	}
	listed := make(map[string]bool, len(backends))
	var revive, replaced []*Backend
	for _, nb := range backends {
		listed[nb.ID] = true
		ob := byID[nb.ID]
		switch {
		case ob != nil && (ob == nb || ob.URL.String() == nb.URL.String()):
			ob.weight.Store(int64(max(nb.Weight, 1)))
			if ob.removing {
				revive = append(revive, ob)
			}
			next.backends = append(next.backends, ob)
		default:
			if ob != nil {
				replaced = append(replaced, ob)
			}
			adopt(nb)
			next.backends = append(next.backends, nb)
		}
	}
	var leaving []*Backend
	for _, ob := range old.backends {
		if !listed[ob.ID] {
			next.backends = append(next.backends, ob)
			leaving = append(leaving, ob)
		}
	}
	p.snap.Store(next)
	for _, ob := range replaced {
		p.closeOut(ob, "replaced: its URL changed")
	}
	for _, b := range revive {
		p.undrainLocked(b, "listed again by a config update")
	}
	for _, b := range leaving {
		p.removeLocked(b, "no longer in the configuration")
	}
	if !cfg.Health.enabled() && old.cfg.Health.enabled() {
		for _, b := range next.backends {
			p.transition(b, func() string {
				b.activeDown, b.checkOK, b.checkFail, b.lastCheckErr = false, 0, 0, ""
				return "active health checks turned off"
			})
		}
	}
	next.log.Info("upstream updated", "algorithm", cfg.Algorithm, "backends", len(backends), "leaving", len(leaving))
	p.notify()
	return nil
}

// notify wakes Run to pick up a change.
func (p *Pool) notify() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// transition changes the reasons behind b's state with f (called with b.mu
// held; it returns the reason to log), then logs and counts the change of
// state, if any.
func (p *Pool) transition(b *Backend, f func() string) {
	b.mu.Lock()
	from := b.State()
	reason := f()
	to := b.stateLocked()
	if to != from {
		b.state.Store(int32(to))
		b.changes[to].Add(1)
	}
	b.mu.Unlock()
	if to != from {
		p.snap.Load().log.Info("backend state changed", "backend", b.ID, "from", from.String(), "to", to.String(), "reason", reason)
	}
}
