package autoscale

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/scaleout/scaleout/balancer"
)

// fakeClock is a simulated clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// simProvider runs simulated instances: each becomes ready (and joins the
// pool) startDelay after Scale asked for it, and leaves at once on
// scale-in.
type simProvider struct {
	mu         sync.Mutex
	clock      *fakeClock
	pool       *balancer.Pool
	startDelay time.Duration
	target     int
	seq        int
	insts      []*simInstance
}

type simInstance struct {
	Instance
	readyAt time.Time
}

func (p *simProvider) Scale(n int) {
	p.mu.Lock()
	p.target = n
	p.mu.Unlock()
	p.advance()
}

// advance brings the instances in line with the target and the clock.
func (p *simProvider) advance() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	for len(p.insts) < p.target {
		p.seq++
		id := fmt.Sprintf("127.0.0.1:%d", 10000+p.seq)
		p.insts = append(p.insts, &simInstance{
			Instance: Instance{ID: fmt.Sprintf("sim-%d", p.seq), Backend: id, URL: "http://" + id, State: Starting, Started: now},
			readyAt:  now.Add(p.startDelay),
		})
	}
	for len(p.insts) > p.target {
		// Starting ones first, then the newest.
		victim := len(p.insts) - 1
		for i, in := range p.insts {
			if in.State == Starting {
				victim = i
			}
		}
		in := p.insts[victim]
		p.insts = append(p.insts[:victim], p.insts[victim+1:]...)
		if in.State == Ready {
			_ = p.pool.Remove(in.Backend)
		}
	}
	for _, in := range p.insts {
		if in.State == Starting && !now.Before(in.readyAt) {
			b, err := balancer.NewBackend(in.URL, 1)
			if err != nil {
				panic(err)
			}
			if err := p.pool.Add(b); err != nil {
				panic(err)
			}
			in.State = Ready
		}
	}
}

func (p *simProvider) Instances() []Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Instance, 0, len(p.insts))
	for _, in := range p.insts {
		out = append(out, in.Instance)
	}
	return out
}

func (p *simProvider) Run(ctx context.Context, report func(Event)) error {
	<-ctx.Done()
	return nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// sim is a controller over a real balancer pool on a simulated clock,
// under a simulated load.
type sim struct {
	t     *testing.T
	clock *fakeClock
	pool  *balancer.Pool
	prov  *simProvider
	c     *Controller
	held  []*balancer.Backend
	lat   *fakeLatency
	// events seen, by time
	events []Event
}

type fakeLatency struct {
	mu  sync.Mutex
	d   time.Duration
	ok  bool
	got int
}

func (f *fakeLatency) P95(string) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got++
	return f.d, f.ok
}

func (f *fakeLatency) set(d time.Duration, ok bool) {
	f.mu.Lock()
	f.d, f.ok = d, ok
	f.mu.Unlock()
}

func newSim(t *testing.T, cfg Config, startDelay time.Duration) *sim {
	t.Helper()
	clock := newFakeClock()
	pool, err := balancer.New("app", balancer.Config{Passive: balancer.PassiveConfig{Disabled: true}, Logger: quietLogger()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	prov := &simProvider{clock: clock, pool: pool, startDelay: startDelay}
	lat := &fakeLatency{}
	cfg.Clock = clock
	cfg.Logger = quietLogger()
	if cfg.Metric == MetricLatencyP95 {
		cfg.Latency = lat
	}
	c, err := New("app", pool, prov, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, clock: clock, pool: pool, prov: prov, c: c, lat: lat}
	prov.Scale(c.cfg.Min) // what Run does first
	return s
}

// interval runs one interval under load (total requests in flight for
// inflight, total requests per second for rps, seconds for latency_p95)
// and returns the decision.
func (s *sim) interval(load float64) Decision {
	cfg := s.c.cfg
	for i := range samplesPerInterval {
		s.clock.Advance(cfg.Interval / samplesPerInterval)
		s.prov.advance()
		switch cfg.Metric {
		case MetricInflight:
			s.release()
			for range int(math.Round(load)) {
				b, err := s.pool.Pick(netip.Addr{}, nil)
				if err != nil {
					break
				}
				s.held = append(s.held, b)
			}
			s.c.sample()
		case MetricRPS:
			n := int(math.Round(load * (cfg.Interval / samplesPerInterval).Seconds()))
			for range n {
				b, err := s.pool.Pick(netip.Addr{}, nil)
				if err != nil {
					break
				}
				s.pool.Done(b, time.Millisecond, balancer.Success)
			}
		case MetricLatencyP95:
			if i == 0 {
				s.lat.set(time.Duration(load*float64(time.Second)), load > 0)
			}
		}
	}
	before := len(s.c.events.list())
	d := s.c.Evaluate()
	evs := s.c.events.list()
	if len(evs) > before {
		s.events = append(s.events, evs[before:]...)
	}
	return d
}

func (s *sim) release() {
	for _, b := range s.held {
		s.pool.Done(b, time.Millisecond, balancer.Success)
	}
	s.held = s.held[:0]
}

// run runs n intervals at load(i) and returns the decisions.
func (s *sim) run(n int, load func(i int) float64) []Decision {
	out := make([]Decision, 0, n)
	for i := range n {
		out = append(out, s.interval(load(i)))
	}
	return out
}

func (s *sim) readyCount() int {
	n := 0
	for _, in := range s.prov.Instances() {
		if in.State == Ready {
			n++
		}
	}
	return n
}
