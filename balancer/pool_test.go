package balancer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewConfig(t *testing.T) {
	t.Parallel()
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		p, err := New("app", Config{}, backends(t, 2))
		if err != nil {
			t.Fatal(err)
		}
		c := p.Config()
		h, pc := c.Health, c.Passive
		if c.Algorithm != AlgorithmRoundRobin || c.DrainTimeout != 30*time.Second || c.Logger == nil ||
			h.Path != "" || h.Method != http.MethodGet || h.Interval != 5*time.Second || h.Timeout != 2*time.Second ||
			h.StatusMin != 200 || h.StatusMax != 399 || h.UnhealthyAfter != 3 || h.HealthyAfter != 2 ||
			pc.Disabled || pc.Failures != 5 || pc.EjectFor != 10*time.Second || pc.MaxEjectFor != 5*time.Minute || pc.MaxEjectedPercent != 50 {
			t.Errorf("defaults: %+v", c)
		}
		if p.Name() != "app" || len(p.Backends()) != 2 {
			t.Errorf("name %q, %d backends", p.Name(), len(p.Backends()))
		}
	})
	bs := backends(t, 2)
	tests := []struct {
		name     string
		cfg      Config
		backends []*Backend
		want     string
	}{
		{name: "unknown algorithm", cfg: Config{Algorithm: "random-ish"}, want: `algorithm "random-ish": unknown algorithm`},
		{name: "negative drain timeout", cfg: Config{DrainTimeout: -time.Second}, want: "drain timeout"},
		{name: "health path", cfg: Config{Health: HealthConfig{Path: "health"}}, want: `health: path "health"`},
		{name: "status range", cfg: Config{Health: HealthConfig{Path: "/h", StatusMin: 500, StatusMax: 200}}, want: "status range 500-200"},
		{name: "negative interval", cfg: Config{Health: HealthConfig{Interval: -1}}, want: "health: interval"},
		{name: "ejected percent", cfg: Config{Passive: PassiveConfig{MaxEjectedPercent: 120}}, want: "max ejected percent 120"},
		{name: "duplicate backend", backends: []*Backend{bs[0], bs[1], bs[0]}, want: "backend already in pool"},
		{name: "nil backend", backends: []*Backend{bs[0], nil}, want: "backend 1: nil backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New("app", tt.cfg, tt.backends)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "upstream app: ") {
				t.Errorf("error %v, want it to name the upstream and contain %q", err, tt.want)
			}
		})
	}
	if _, err := New("app", Config{Algorithm: "nope"}, nil); !errors.Is(err, ErrUnknownAlgorithm) {
		t.Errorf("%v does not wrap ErrUnknownAlgorithm", err)
	}
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	t.Run("staying backends keep their state", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 3)
		a, b, c := bs[0], bs[1], bs[2]
		p, _ := testPool(t, Config{Passive: PassiveConfig{Failures: 2}}, bs)
		outcome(t, p, a, 40*time.Millisecond, Success)
		outcome(t, p, b, 10*time.Millisecond, ServerError)
		outcome(t, p, b, 10*time.Millisecond, ServerError) // ejected
		if b.State() != Unhealthy {
			t.Fatalf("b %s, want ejected", b.State())
		}
		inFlight, _ := p.Pick(netip.Addr{}, []*Backend{a})
		if inFlight != c {
			t.Fatalf("picked %v, want c", inFlight)
		}

		// The reload lists a (weight 3) and b as new objects, drops c, adds d.
		a2, _ := NewBackend(a.URL.String(), 3)
		b2, _ := NewBackend(b.URL.String(), 1)
		d, _ := NewBackend("http://127.0.0.1:10099", 1)
		if err := p.Update(Config{Algorithm: AlgorithmWeightedRoundRobin, Logger: quiet()}, []*Backend{a2, b2, d}); err != nil {
			t.Fatal(err)
		}
		if p.Backend(a.ID) != a || p.Backend(b.ID) != b || p.Backend(d.ID) != d {
			t.Fatal("staying backends were replaced")
		}
		if a.Served() != 1 || a.EWMA() != 40*time.Millisecond || a.CurrentWeight() != 3 || a.Weight != 1 {
			t.Errorf("a: served %d ewma %v weight %d (field %d); want 1, 40ms, 3 (1)", a.Served(), a.EWMA(), a.CurrentWeight(), a.Weight)
		}
		if b.State() != Unhealthy || b.Ejections() != 1 {
			t.Errorf("b: %s with %d ejections, want still ejected", b.State(), b.Ejections())
		}
		if c.State() != Draining || p.Backend(c.ID) != c {
			t.Errorf("c: %s, want draining and listed while busy", c.State())
		}
		if got := p.Status().Algorithm; got != AlgorithmWeightedRoundRobin {
			t.Errorf("algorithm %s", got)
		}
		if got := pickSeq(t, p, []*Backend{a, b, c, d}, 8, nil); got != "aadaaada" {
			t.Errorf("picks %q after the update, want a and d 3:1", got)
		}
		p.Done(inFlight, time.Millisecond, Success)
		eventually(t, "c leaves", func() bool { return p.Backend(c.ID) == nil })

		// A failing update changes nothing.
		if err := p.Update(Config{Algorithm: "bogus"}, nil); err == nil {
			t.Fatal("bad config accepted")
		}
		if len(p.Backends()) != 3 || p.Config().Algorithm != AlgorithmWeightedRoundRobin {
			t.Errorf("failed update changed the pool")
		}
	})

	t.Run("listed again while leaving", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 2)
		p, _ := testPool(t, Config{}, bs)
		held, _ := p.Pick(netip.Addr{}, []*Backend{bs[1]})
		if err := p.Update(Config{Logger: quiet()}, bs[1:]); err != nil {
			t.Fatal(err)
		}
		if bs[0].State() != Draining {
			t.Fatalf("dropped backend %s, want draining", bs[0].State())
		}
		if err := p.Update(Config{Logger: quiet()}, bs); err != nil {
			t.Fatal(err)
		}
		p.Done(held, time.Millisecond, Success)
		time.Sleep(10 * time.Millisecond)
		if p.Backend(bs[0].ID) != bs[0] || bs[0].State() != Healthy {
			t.Errorf("backend listed again: %v %s, want kept and healthy", p.Backend(bs[0].ID), bs[0].State())
		}
	})

	t.Run("drained stays drained", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 2)
		p, _ := testPool(t, Config{}, bs)
		if err := p.Drain(bs[0].ID); err != nil {
			t.Fatal(err)
		}
		if err := p.Update(Config{Logger: quiet()}, bs); err != nil {
			t.Fatal(err)
		}
		if bs[0].State() != Draining {
			t.Errorf("state %s, want draining", bs[0].State())
		}
	})

	t.Run("changed URL replaces", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 1)
		p, _ := testPool(t, Config{}, bs)
		nb, _ := NewBackend(strings.Replace(bs[0].URL.String(), "http:", "https:", 1), 1)
		if err := p.Update(Config{Logger: quiet()}, []*Backend{nb}); err != nil {
			t.Fatal(err)
		}
		if got := p.Backends(); len(got) != 1 || got[0] != nb {
			t.Errorf("backends %v, want only the new one", got)
		}
	})
}

func TestStatusJSON(t *testing.T) {
	t.Parallel()
	bs := backends(t, 2)
	p, _ := testPool(t, Config{Algorithm: AlgorithmLeastConnections}, bs)
	outcome(t, p, bs[0], 1500*time.Microsecond, Success)
	outcome(t, p, bs[1], time.Millisecond, ServerError)
	raw, err := json.Marshal(p.Status())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got["name"] != "app" || got["algorithm"] != "least-connections" {
		t.Errorf("status %s", raw)
	}
	b0 := got["backends"].([]any)[0].(map[string]any)
	b1 := got["backends"].([]any)[1].(map[string]any)
	for _, k := range []string{"id", "url", "weight", "state", "active", "ewma_ms", "consecutive_failures", "served", "ejections", "last_check_error"} {
		if _, ok := b0[k]; !ok {
			t.Errorf("backend status lacks %q: %s", k, raw)
		}
	}
	if b0["ewma_ms"] != 1.5 || b0["served"] != 1.0 || b0["state"] != "healthy" || b0["url"] != "http://127.0.0.1:10000" {
		t.Errorf("backend 0: %v", b0)
	}
	if b1["consecutive_failures"] != 1.0 {
		t.Errorf("backend 1: %v", b1)
	}
}

// TestConcurrentUse runs picks, completions, updates, removals, drains and
// health checks at once; run it with -race.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	srv := newHealthServer(t)
	home, _ := NewBackend(srv.URL, 1)
	all := append(backends(t, 6, 1, 2, 3), home)
	cfgs := make([]Config, 0, len(Algorithms()))
	for _, alg := range Algorithms() {
		cfgs = append(cfgs, Config{
			Algorithm:    alg,
			Logger:       quiet(),
			DrainTimeout: 20 * time.Millisecond,
			Health:       HealthConfig{Path: "/health", Interval: 5 * time.Millisecond},
			Passive:      PassiveConfig{Failures: 2, EjectFor: 5 * time.Millisecond},
		})
	}
	p, err := New("app", cfgs[0], all)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { p.Run(ctx); close(runDone) }()

	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			client := netip.AddrFrom4([4]byte{10, 0, 0, byte(w)})
			var tried []*Backend
			for i := range 3000 {
				b, err := p.Pick(client, tried)
				if err != nil {
					tried = tried[:0]
					continue
				}
				o := Outcome(i % numOutcomes)
				if w%2 == 0 {
					o = Success
				}
				p.Done(b, time.Duration(i%7)*time.Millisecond, o)
				if o != Success && len(tried) < 2 {
					tried = append(tried, b)
				} else {
					tried = tried[:0]
				}
			}
		})
	}
	c := NewCollector(func() []*Pool { return []*Pool{p} })
	wg.Go(func() {
		for i := range 200 {
			n := 2 + i%5
			list := append([]*Backend(nil), all[:n]...)
			if i%3 == 0 {
				list = append(list, home)
			}
			if err := p.Update(cfgs[i%len(cfgs)], list); err != nil {
				t.Error(err)
				return
			}
			_ = p.Status()
			collect(t, c)
			time.Sleep(100 * time.Microsecond)
		}
	})
	wg.Go(func() {
		for i := range 300 {
			id := all[i%len(all)].ID
			switch i % 4 {
			case 0:
				_ = p.Drain(id)
			case 1:
				_ = p.Undrain(id)
			case 2:
				_ = p.Remove(id)
			case 3:
				if b, err := NewBackend(fmt.Sprintf("http://127.0.0.1:%d", 20000+i), 1); err == nil {
					_ = p.Add(b)
				}
			}
			wctx, wcancel := context.WithTimeout(ctx, time.Millisecond)
			_ = p.WaitDrained(wctx, id)
			wcancel()
		}
	})
	wg.Wait()
	cancel()
	<-runDone
	for _, b := range p.Backends() {
		if b.Active() != 0 {
			t.Errorf("%s has %d in flight after all requests ended", b.ID, b.Active())
		}
	}
	for _, b := range all {
		if b.Active() != 0 {
			t.Errorf("%s has %d in flight after all requests ended", b.ID, b.Active())
		}
	}
}

func collect(t *testing.T, c *Collector) {
	t.Helper()
	ch := make(chan prometheusMetric, 64)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	for range ch {
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestStateChangesLogged(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	bs := backends(t, 2)
	p, clk := testPool(t, Config{Logger: log, Passive: PassiveConfig{Failures: 1}}, bs)
	outcome(t, p, bs[0], time.Millisecond, Timeout)
	clk.Advance(10 * time.Second)
	if err := p.Drain(bs[1].ID); err != nil {
		t.Fatal(err)
	}
	type entry struct {
		Msg, Upstream, Backend, From, To, Reason string
	}
	var got []entry
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if e.Msg == "backend state changed" {
			got = append(got, e)
		}
	}
	want := []entry{
		{Upstream: "app", Backend: bs[0].ID, From: "healthy", To: "unhealthy", Reason: "passive: 1 failures in a row, ejected for 10s"},
		{Upstream: "app", Backend: bs[0].ID, From: "unhealthy", To: "healthy", Reason: "passive: ejection ended"},
		{Upstream: "app", Backend: bs[1].ID, From: "healthy", To: "draining", Reason: "drained"},
	}
	if len(got) != len(want) {
		t.Fatalf("logged %+v, want %+v", got, want)
	}
	for i := range want {
		want[i].Msg = "backend state changed"
		if got[i] != want[i] {
			t.Errorf("change %d logged %+v, want %+v", i, got[i], want[i])
		}
	}
	if n := bs[0].changes[Unhealthy].Load() + bs[0].changes[Healthy].Load(); n != 2 {
		t.Errorf("%d changes counted, want 2", n)
	}
}
