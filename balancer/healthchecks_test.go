package balancer

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// healthServer is a backend whose health endpoint answers status, and
// records what it was asked.
type healthServer struct {
	*httptest.Server
	status   atomic.Int32
	delay    atomic.Int64 // ns
	mu       sync.Mutex
	answered []int // statuses served, in order
	paths    []string
	methods  []string
}

func newHealthServer(t *testing.T) *healthServer {
	t.Helper()
	h := &healthServer{}
	h.status.Store(http.StatusOK)
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := time.Duration(h.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		st := int(h.status.Load())
		h.mu.Lock()
		h.answered = append(h.answered, st)
		h.paths = append(h.paths, r.URL.Path)
		h.methods = append(h.methods, r.Method)
		h.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(h.Close)
	return h
}

// served returns how many checks answered with status st so far.
func (h *healthServer) served(st int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, s := range h.answered {
		if s == st {
			n++
		}
	}
	return n
}

func (h *healthServer) backend(t *testing.T) *Backend {
	t.Helper()
	b, err := NewBackend(h.URL, 1)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runPool starts p.Run until the test ends.
func runPool(t *testing.T, p *Pool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func fastHealth() HealthConfig {
	return HealthConfig{Path: "/health", Interval: 5 * time.Millisecond, Timeout: 5 * time.Second, UnhealthyAfter: 3, HealthyAfter: 2}
}

func TestHealthTransitions(t *testing.T) {
	t.Parallel()
	srv := newHealthServer(t)
	b := srv.backend(t)
	p, _ := testPool(t, Config{Health: fastHealth()}, []*Backend{b})
	if b.State() != Healthy {
		t.Fatalf("new backend %s, want healthy", b.State())
	}
	runPool(t, p)
	eventually(t, "checks pass", func() bool { return srv.served(200) >= 3 })
	if b.State() != Healthy {
		t.Fatalf("state %s with passing checks", b.State())
	}

	srv.status.Store(http.StatusServiceUnavailable)
	eventually(t, "backend goes unhealthy", func() bool { return b.State() == Unhealthy })
	if n := srv.served(503); n < 3 {
		t.Errorf("unhealthy after %d failed checks, want 3", n)
	}
	if e := b.LastCheckError(); !strings.Contains(e, "status 503") {
		t.Errorf("last check error %q, want it to name status 503", e)
	}
	ok := srv.served(200)
	srv.status.Store(http.StatusOK)
	eventually(t, "backend comes back", func() bool { return b.State() == Healthy })
	if n := srv.served(200) - ok; n < 2 {
		t.Errorf("healthy after %d passed checks, want 2", n)
	}
	if b.LastCheckError() != "" {
		t.Errorf("last check error %q after passing checks", b.LastCheckError())
	}
	if got := b.changes[Unhealthy].Load(); got != 1 {
		t.Errorf("%d changes to unhealthy counted, want 1", got)
	}
	if got := b.changes[Healthy].Load(); got != 1 {
		t.Errorf("%d changes to healthy counted, want 1", got)
	}
}

func TestHealthThresholds(t *testing.T) {
	t.Parallel()
	// A server answering a fixed script of statuses, then 200 forever.
	tests := []struct {
		name      string
		script    []int
		wantDown  bool
		wantAfter int // checks answered when the state is judged
	}{
		{name: "two failures are not enough", script: []int{500, 500, 200, 500, 500}, wantAfter: 8},
		{name: "three failures mark down", script: []int{500, 500, 500}, wantDown: true, wantAfter: 3},
		{name: "one success is not enough to come back", script: []int{500, 500, 500, 200}, wantDown: true, wantAfter: 4},
		{name: "two successes bring it back", script: []int{500, 500, 500, 200, 200}, wantAfter: 5},
		{name: "status outside the range fails", script: []int{404, 404, 404}, wantDown: true, wantAfter: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				i := int(n.Add(1)) - 1
				st := 200
				if i < len(tt.script) {
					st = tt.script[i]
				}
				if i >= tt.wantAfter {
					// Hold later checks until the test has looked.
					<-r.Context().Done()
					return
				}
				w.WriteHeader(st)
			}))
			t.Cleanup(srv.Close)
			b, _ := NewBackend(srv.URL, 1)
			p, _ := testPool(t, Config{Health: fastHealth()}, []*Backend{b})
			runPool(t, p)
			eventually(t, "checks answered", func() bool { return n.Load() > int64(tt.wantAfter) })
			wasDown := b.changes[Unhealthy].Load() > 0
			if got := b.State() == Unhealthy; got != tt.wantDown {
				t.Errorf("after %v: down %v, want %v", tt.script, got, tt.wantDown)
			}
			if wantWasDown := countFails(tt.script) >= 3; wasDown != wantWasDown {
				t.Errorf("went down on the way: %v, want %v", wasDown, wantWasDown)
			}
		})
	}
}

func TestHealthChecks(t *testing.T) {
	t.Parallel()
	t.Run("refused connection and timeout", func(t *testing.T) {
		t.Parallel()
		dead := newHealthServer(t)
		deadB := dead.backend(t)
		dead.Close()
		slow := newHealthServer(t)
		slow.delay.Store(int64(time.Minute)) // until the check gives up
		slowB := slow.backend(t)
		good := newHealthServer(t)
		goodB := good.backend(t)
		hc := fastHealth()
		hc.Timeout = 300 * time.Millisecond
		p, _ := testPool(t, Config{Health: hc}, []*Backend{deadB, slowB, goodB})
		runPool(t, p)
		eventually(t, "dead and slow backends go down", func() bool {
			return deadB.State() == Unhealthy && slowB.State() == Unhealthy
		})
		if goodB.State() != Healthy {
			t.Errorf("good backend %s", goodB.State())
		}
		if e := slowB.LastCheckError(); !strings.Contains(e, "deadline") && !strings.Contains(e, "Timeout") {
			t.Errorf("slow backend's error %q does not say it timed out", e)
		}
		if deadB.LastCheckError() == "" {
			t.Error("dead backend has no check error")
		}
	})

	t.Run("method, path and added backends", func(t *testing.T) {
		t.Parallel()
		srv := newHealthServer(t)
		hc := fastHealth()
		hc.Method, hc.Path = http.MethodHead, "/ready"
		p, _ := testPool(t, Config{Health: hc}, nil)
		runPool(t, p)
		if err := p.Add(srv.backend(t)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the added backend is checked", func() bool { return srv.served(200) > 0 })
		srv.mu.Lock()
		path, method := srv.paths[0], srv.methods[0]
		srv.mu.Unlock()
		if path != "/ready" || method != http.MethodHead {
			t.Errorf("checked %s %s, want HEAD /ready", method, path)
		}
	})

	t.Run("draining stays draining", func(t *testing.T) {
		t.Parallel()
		srv := newHealthServer(t)
		b := srv.backend(t)
		p, _ := testPool(t, Config{Health: fastHealth()}, []*Backend{b})
		if err := p.Drain(b.ID); err != nil {
			t.Fatal(err)
		}
		runPool(t, p)
		srv.status.Store(500)
		eventually(t, "failing checks", func() bool { return srv.served(500) >= 4 })
		if b.State() != Draining {
			t.Fatalf("state %s, want draining", b.State())
		}
		srv.status.Store(200)
		n := srv.served(200)
		eventually(t, "passing checks", func() bool { return srv.served(200) >= n+3 })
		if b.State() != Draining {
			t.Fatalf("state %s, want draining", b.State())
		}
		if err := p.Undrain(b.ID); err != nil {
			t.Fatal(err)
		}
		if b.State() != Healthy {
			t.Errorf("state %s after undrain with passing checks, want healthy", b.State())
		}
	})

	t.Run("update changes the checks", func(t *testing.T) {
		t.Parallel()
		srv := newHealthServer(t)
		b := srv.backend(t)
		p, _ := testPool(t, Config{Health: fastHealth()}, []*Backend{b})
		runPool(t, p)
		srv.status.Store(500)
		eventually(t, "backend goes down", func() bool { return b.State() == Unhealthy })

		// Checks off: the backend is no longer held down by them.
		if err := p.Update(Config{Logger: quiet()}, []*Backend{b}); err != nil {
			t.Fatal(err)
		}
		if b.State() != Healthy {
			t.Fatalf("state %s after checks were turned off, want healthy", b.State())
		}
		// Checks on with a new path, which the server fails.
		hc := fastHealth()
		hc.Path = "/v2/health"
		if err := p.Update(Config{Health: hc, Logger: quiet()}, []*Backend{b}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the new path is checked and fails", func() bool {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			return len(srv.paths) > 0 && srv.paths[len(srv.paths)-1] == "/v2/health" && b.State() == Unhealthy
		})
	})
}

// countFails returns the longest run of failing statuses in script.
func countFails(script []int) int {
	run, longest := 0, 0
	for _, st := range script {
		if st >= 400 {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return longest
}
