package balancer

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestDrain(t *testing.T) {
	t.Parallel()
	bs := backends(t, 3)
	p, _ := testPool(t, Config{}, bs)
	if err := p.Drain(bs[1].ID); err != nil {
		t.Fatal(err)
	}
	if got := pickSeq(t, p, bs, 10, nil); got != "acacacacac" {
		t.Errorf("picks %q, want none on the drained backend", got)
	}
	if len(p.Backends()) != 3 || bs[1].State() != Draining {
		t.Errorf("drained backend: listed %d, state %s; want listed and draining", len(p.Backends()), bs[1].State())
	}
	if st := p.Status(); st.Backends[1].State != "draining" || st.Backends[1].Removing {
		t.Errorf("status %+v, want draining and not removing", st.Backends[1])
	}
	// A drained idle backend is drained at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitDrained(ctx, bs[1].ID); err != nil {
		t.Errorf("WaitDrained: %v", err)
	}
	if err := p.WaitDrained(ctx, bs[0].ID); !errors.Is(err, ErrNotDraining) {
		t.Errorf("WaitDrained on a healthy backend: %v, want ErrNotDraining", err)
	}
	if err := p.Undrain(bs[1].ID); err != nil {
		t.Fatal(err)
	}
	if got := pickSeq(t, p, bs, 6, nil); len(got) != 6 || bs[1].Served() == 0 {
		t.Errorf("undrained backend served %d, want some", bs[1].Served())
	}
	for _, f := range []func(string) error{p.Drain, p.Undrain, p.Remove} {
		if err := f("127.0.0.1:1"); !errors.Is(err, ErrUnknownBackend) {
			t.Errorf("unknown ID: %v, want ErrUnknownBackend", err)
		}
	}
}

func TestRemove(t *testing.T) {
	t.Parallel()
	t.Run("waits for requests in flight", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 2)
		p, _ := testPool(t, Config{}, bs)
		busy := bs[0]
		var held []*Backend
		for range 3 {
			b, err := p.Pick(netip.Addr{}, []*Backend{bs[1]})
			if err != nil || b != busy {
				t.Fatalf("pick %v %v", b, err)
			}
			held = append(held, b)
		}
		if err := p.Remove(busy.ID); err != nil {
			t.Fatal(err)
		}
		if busy.State() != Draining {
			t.Fatalf("state %s, want draining", busy.State())
		}
		waited := make(chan error, 1)
		go func() { waited <- p.WaitDrained(context.Background(), busy.ID) }()
		// No new request goes to it.
		for range 5 {
			b, err := p.Pick(netip.Addr{}, nil)
			if err != nil || b != bs[1] {
				t.Fatalf("pick %v %v during removal, want the other backend", b, err)
			}
			p.Done(b, time.Millisecond, Success)
		}
		for _, b := range held[1:] {
			p.Done(b, time.Millisecond, Success)
		}
		if p.Backend(busy.ID) == nil {
			t.Fatal("backend left with a request in flight")
		}
		p.Done(held[0], time.Millisecond, Success)
		eventually(t, "the drained backend leaves", func() bool { return p.Backend(busy.ID) == nil })
		if err := <-waited; err != nil {
			t.Errorf("WaitDrained: %v", err)
		}
		if len(p.Backends()) != 1 || busy.Served() != 3 {
			t.Errorf("%d backends left, removed one served %d; want 1 and 3", len(p.Backends()), busy.Served())
		}
	})

	t.Run("drops a busy backend after the drain timeout", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 2)
		p, clk := testPool(t, Config{DrainTimeout: 30 * time.Second}, bs)
		b, _ := p.Pick(netip.Addr{}, nil)
		if err := p.Remove(b.ID); err != nil {
			t.Fatal(err)
		}
		if err := p.Remove(b.ID); err != nil {
			t.Errorf("second Remove: %v", err)
		}
		waitForTimer(t, clk)
		clk.Advance(29 * time.Second)
		time.Sleep(10 * time.Millisecond)
		if p.Backend(b.ID) == nil {
			t.Fatal("busy backend left before the drain timeout")
		}
		clk.Advance(time.Second)
		eventually(t, "the busy backend leaves", func() bool { return p.Backend(b.ID) == nil })
		// Its request finishes later without harm.
		p.Done(b, time.Millisecond, Success)
		if b.Active() != 0 || b.Served() != 1 {
			t.Errorf("active %d served %d, want 0 and 1", b.Active(), b.Served())
		}
	})

	t.Run("add with the ID of a leaving backend replaces it", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 2)
		p, _ := testPool(t, Config{}, bs)
		old, _ := p.Pick(netip.Addr{}, nil)
		if err := p.Remove(old.ID); err != nil {
			t.Fatal(err)
		}
		nb, _ := NewBackend(old.URL.String(), 2)
		if err := p.Add(nb); err != nil {
			t.Fatalf("Add while the old one drains: %v", err)
		}
		if p.Backend(old.ID) != nb || len(p.Backends()) != 2 {
			t.Fatalf("backend %v, want the new one", p.Backend(old.ID))
		}
		if err := p.Add(nb); !errors.Is(err, ErrDuplicateBackend) {
			t.Errorf("adding it again: %v, want ErrDuplicateBackend", err)
		}
		p.Done(old, time.Millisecond, Success)
		if nb.State() != Healthy {
			t.Errorf("new backend %s", nb.State())
		}
	})

	t.Run("undrain calls the removal off", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 2)
		p, clk := testPool(t, Config{}, bs)
		b, _ := p.Pick(netip.Addr{}, nil)
		if err := p.Remove(b.ID); err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 1)
		go func() { waited <- p.WaitDrained(context.Background(), b.ID) }()
		time.Sleep(5 * time.Millisecond)
		if err := p.Undrain(b.ID); err != nil {
			t.Fatal(err)
		}
		if err := <-waited; !errors.Is(err, ErrNotDraining) {
			t.Errorf("WaitDrained: %v, want ErrNotDraining", err)
		}
		p.Done(b, time.Millisecond, Success)
		clk.Advance(time.Hour)
		time.Sleep(10 * time.Millisecond)
		if p.Backend(b.ID) != b || b.State() != Healthy {
			t.Errorf("backend %v %s, want kept and healthy", p.Backend(b.ID), b.State())
		}
	})

	t.Run("WaitDrained gives up with its context", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 1)
		p, _ := testPool(t, Config{}, bs)
		b, _ := p.Pick(netip.Addr{}, nil)
		defer p.Done(b, time.Millisecond, Success)
		if err := p.Drain(b.ID); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		if err := p.WaitDrained(ctx, b.ID); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitDrained: %v, want DeadlineExceeded", err)
		}
	})
}

// waitForTimer waits until the removal goroutine has set its timer.
func waitForTimer(t *testing.T, clk *fakeClock) {
	t.Helper()
	eventually(t, "a timer is set", func() bool {
		clk.mu.Lock()
		defer clk.mu.Unlock()
		return len(clk.timers) > 0
	})
}

// TestRemoveUnderLoad checks that a backend removed while picks run leaves
// only once nothing is in flight on it, and gets no request afterwards.
func TestRemoveUnderLoad(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		bs := backends(t, 3)
		p, _ := testPool(t, Config{DrainTimeout: time.Hour}, bs) // the fake clock never times out
		victim := bs[round%3]
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					b, err := p.Pick(netip.Addr{}, nil)
					if err != nil {
						t.Error(err)
						return
					}
					runtime.Gosched()
					p.Done(b, time.Microsecond, Success)
				}
			})
		}
		time.Sleep(time.Millisecond)
		if err := p.Remove(victim.ID); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitDrained(context.Background(), victim.ID); err != nil {
			t.Fatal(err)
		}
		active, served := victim.Active(), victim.Served()
		eventually(t, "the victim leaves", func() bool { return p.Backend(victim.ID) == nil })
		time.Sleep(time.Millisecond)
		close(stop)
		wg.Wait()
		if active != 0 || victim.Served() != served {
			t.Fatalf("round %d: drained with %d in flight; served %d then %d", round, active, served, victim.Served())
		}
	}
}
