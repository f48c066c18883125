package balancer

import (
	"net/netip"
	"testing"
	"time"
)

func TestPassiveEjection(t *testing.T) {
	t.Parallel()
	cfg := Config{Passive: PassiveConfig{Failures: 3, EjectFor: 10 * time.Second, MaxEjectFor: 25 * time.Second}}

	t.Run("failures in a row eject", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name      string
			outcomes  []Outcome
			wantState State
		}{
			{"three 5xx", []Outcome{ServerError, ServerError, ServerError}, Unhealthy},
			{"mixed failures", []Outcome{ConnectFailure, Timeout, ServerError}, Unhealthy},
			{"success resets", []Outcome{ServerError, ServerError, Success, ServerError, ServerError}, Healthy},
			{"canceled counts nothing", []Outcome{ServerError, ServerError, Canceled, Canceled}, Healthy},
			{"canceled does not reset", []Outcome{ServerError, Canceled, ServerError, ServerError}, Unhealthy},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				bs := backends(t, 3)
				p, _ := testPool(t, cfg, bs)
				for _, o := range tt.outcomes {
					outcome(t, p, bs[0], time.Millisecond, o)
				}
				if got := bs[0].State(); got != tt.wantState {
					t.Errorf("state %s, want %s", got, tt.wantState)
				}
				wantEj := uint64(0)
				if tt.wantState == Unhealthy {
					wantEj = 1
				}
				if bs[0].Ejections() != wantEj {
					t.Errorf("ejections %d, want %d", bs[0].Ejections(), wantEj)
				}
			})
		}
	})

	t.Run("ejection time grows and is capped", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 3)
		p, clk := testPool(t, cfg, bs)
		b := bs[0]
		ejectFor := func() time.Duration {
			t.Helper()
			for range 3 {
				outcome(t, p, b, time.Millisecond, ServerError)
			}
			if b.State() != Unhealthy {
				t.Fatalf("not ejected after 3 failures")
			}
			var d time.Duration
			for b.State() == Unhealthy {
				if d > time.Hour {
					t.Fatal("ejection never ends")
				}
				clk.Advance(time.Second)
				d += time.Second
			}
			return d
		}
		for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
			if got := ejectFor(); got != want {
				t.Errorf("ejection %d lasted %v, want %v", i+1, got, want)
			}
			if b.ConsecutiveFailures() != 0 {
				t.Errorf("consecutive failures %d after the ejection, want 0", b.ConsecutiveFailures())
			}
		}
		// A long quiet spell starts the count over.
		clk.Advance(26 * time.Second)
		if got := ejectFor(); got != 10*time.Second {
			t.Errorf("ejection after a quiet spell lasted %v, want 10s", got)
		}
		if b.Ejections() != 5 {
			t.Errorf("ejections %d, want 5", b.Ejections())
		}
	})

	t.Run("an ejected backend gets no picks and comes back", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 2)
		p, clk := testPool(t, cfg, bs)
		for range 3 {
			outcome(t, p, bs[1], time.Millisecond, ConnectFailure)
		}
		for range 10 {
			b, err := p.Pick(netip.Addr{}, nil)
			if err != nil || b != bs[0] {
				t.Fatalf("pick %v %v during ejection, want %s", b, err, bs[0].ID)
			}
			p.Done(b, time.Millisecond, Success)
		}
		clk.Advance(10 * time.Second)
		if got := pickSeq(t, p, bs, 4, nil); got != "abab" && got != "baba" {
			t.Errorf("after the ejection: %q, want both backends in turn", got)
		}
	})

	t.Run("max ejected percent", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			n, pct, wantMax int
		}{
			{n: 4, pct: 50, wantMax: 2},
			{n: 2, pct: 50, wantMax: 1},
			{n: 3, pct: 50, wantMax: 1},
			{n: 10, pct: 30, wantMax: 3},
			{n: 1, pct: 50, wantMax: 0}, // a lone backend stays
			{n: 5, pct: 10, wantMax: 1}, // at least one of several
			{n: 5, pct: 100, wantMax: 5},
		}
		for _, tt := range tests {
			t.Run("", func(t *testing.T) {
				t.Parallel()
				c := cfg
				c.Passive.MaxEjectedPercent = tt.pct
				bs := backends(t, tt.n)
				p, clk := testPool(t, c, bs)
				for _, b := range bs {
					for range 3 {
						outcome(t, p, b, time.Millisecond, ServerError)
					}
				}
				ejected := 0
				var kept *Backend
				for _, b := range bs {
					if b.State() == Unhealthy {
						ejected++
					} else {
						kept = b
					}
				}
				if ejected != tt.wantMax {
					t.Fatalf("%d of %d ejected at %d%%, want %d", ejected, tt.n, tt.pct, tt.wantMax)
				}
				if kept == nil || tt.n < 2 {
					return
				}
				// Over the cap a backend stays in; once room is made, its
				// next failure ejects it.
				if kept.ConsecutiveFailures() < 3 {
					t.Errorf("kept backend has %d failures counted, want 3", kept.ConsecutiveFailures())
				}
				clk.Advance(10 * time.Second)
				outcome(t, p, kept, time.Millisecond, ServerError)
				if kept.State() != Unhealthy {
					t.Errorf("kept backend %s after room was made, want unhealthy", kept.State())
				}
			})
		}
	})

	t.Run("draining backends are not ejected", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 3)
		p, _ := testPool(t, cfg, bs)
		b, _ := p.Pick(netip.Addr{}, nil)
		if err := p.Drain(b.ID); err != nil {
			t.Fatal(err)
		}
		p.Done(b, time.Millisecond, ServerError)
		b.active.Add(2)
		p.Done(b, time.Millisecond, ServerError)
		p.Done(b, time.Millisecond, ServerError)
		if b.Ejections() != 0 || b.State() != Draining {
			t.Errorf("draining backend: %d ejections, %s", b.Ejections(), b.State())
		}
	})

	t.Run("disabled", func(t *testing.T) {
		t.Parallel()
		c := cfg
		c.Passive.Disabled = true
		bs := backends(t, 2)
		p, _ := testPool(t, c, bs)
		for range 20 {
			outcome(t, p, bs[0], time.Millisecond, ServerError)
		}
		if bs[0].State() != Healthy || bs[0].ConsecutiveFailures() != 20 {
			t.Errorf("state %s, failures %d; want healthy with 20 failures counted", bs[0].State(), bs[0].ConsecutiveFailures())
		}
	})

	t.Run("passing active checks do not end an ejection", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 2)
		p, clk := testPool(t, cfg, bs)
		hc, _ := HealthConfig{Path: "/health"}.withDefaults()
		for range 3 {
			outcome(t, p, bs[0], time.Millisecond, ServerError)
		}
		for range 5 {
			p.recordCheck(bs[0], hc, nil)
		}
		if bs[0].State() != Unhealthy {
			t.Fatalf("state %s during the ejection, want unhealthy", bs[0].State())
		}
		// Active checks failing meanwhile hold it down after the ejection.
		for range 3 {
			p.recordCheck(bs[0], hc, errTest)
		}
		clk.Advance(10 * time.Second)
		if bs[0].State() != Unhealthy {
			t.Fatalf("state %s with failing active checks, want unhealthy", bs[0].State())
		}
		p.recordCheck(bs[0], hc, nil)
		p.recordCheck(bs[0], hc, nil)
		if bs[0].State() != Healthy {
			t.Errorf("state %s after 2 passed checks, want healthy", bs[0].State())
		}
	})
}
