package balancer

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when the test advances it. Timers
// due run synchronously in Advance, in the order they are due.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at   time.Time
	f    func()
	done bool // fired or stopped
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if t.done {
			return false
		}
		t.done = true
		return true
	}
}

// Advance moves the clock by d and runs the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.done && !t.at.After(c.now) {
			t.done = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

// quiet is a logger for tests that drops everything.
func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// backends returns n backends on made-up loopback ports with the given
// weights (missing weights are 1).
func backends(t testing.TB, n int, weights ...int) []*Backend {
	t.Helper()
	bs := make([]*Backend, n)
	for i := range bs {
		w := 1
		if i < len(weights) {
			w = weights[i]
		}
		b, err := NewBackend(fmt.Sprintf("http://127.0.0.1:%d", 10000+i), w)
		if err != nil {
			t.Fatal(err)
		}
		bs[i] = b
	}
	return bs
}

// testPool returns a pool over bs with a fake clock and quiet logs.
func testPool(t testing.TB, cfg Config, bs []*Backend) (*Pool, *fakeClock) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	clk := newFakeClock()
	p, err := newPool("app", cfg, bs, clk, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p, clk
}

// setDown marks b down or up as if active health checks said so.
func setDown(p *Pool, b *Backend, down bool) {
	p.transition(b, func() string { b.activeDown = down; return "test" })
}

// outcome runs one request on b with the given outcome, as the proxy would.
func outcome(t testing.TB, p *Pool, b *Backend, took time.Duration, o Outcome) {
	t.Helper()
	if !b.acquire() {
		b.release()
		t.Fatalf("backend %s unavailable (%s)", b.ID, b.State())
	}
	p.Done(b, took, o)
}

// eventually fails the test unless cond holds within 10 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// names maps backends to letters a, b, c … by index in bs.
func names(bs []*Backend) map[*Backend]string {
	m := make(map[*Backend]string, len(bs))
	for i, b := range bs {
		m[b] = string(rune('a' + i))
	}
	return m
}

var errTest = errors.New("test failure")
