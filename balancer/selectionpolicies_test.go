package balancer

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// pickSeq picks n times (each request done at once) and returns the
// sequence of backend letters.
func pickSeq(t *testing.T, p *Pool, bs []*Backend, n int, exclude []*Backend) string {
	t.Helper()
	nm := names(bs)
	var sb strings.Builder
	for range n {
		b, err := p.Pick(netip.Addr{}, exclude)
		if err != nil {
			t.Fatalf("pick: %v", err)
		}
		sb.WriteString(nm[b])
		p.Done(b, time.Millisecond, Success)
	}
	return sb.String()
}

func TestRoundRobinExactSequence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		n       int
		down    []int // indexes marked unhealthy
		drained []int
		exclude []int
		picks   int
		want    string
	}{
		{name: "three healthy", n: 3, picks: 30, want: strings.Repeat("abc", 10)},
		{name: "one unhealthy stays fair", n: 3, down: []int{1}, picks: 30, want: strings.Repeat("ac", 15)},
		{name: "first unhealthy", n: 3, down: []int{0}, picks: 10, want: strings.Repeat("bc", 5)},
		{name: "one draining", n: 4, drained: []int{2}, picks: 12, want: strings.Repeat("abd", 4)},
		{name: "excluded skipped fairly", n: 3, exclude: []int{0}, picks: 10, want: strings.Repeat("bc", 5)},
		{name: "two of five down", n: 5, down: []int{1, 2}, picks: 12, want: strings.Repeat("ade", 4)},
		{name: "single", n: 1, picks: 3, want: "aaa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bs := backends(t, tt.n)
			p, _ := testPool(t, Config{}, bs)
			for _, i := range tt.down {
				setDown(p, bs[i], true)
			}
			for _, i := range tt.drained {
				if err := p.Drain(bs[i].ID); err != nil {
					t.Fatal(err)
				}
			}
			var ex []*Backend
			for _, i := range tt.exclude {
				ex = append(ex, bs[i])
			}
			if got := pickSeq(t, p, bs, tt.picks, ex); got != tt.want {
				t.Errorf("sequence %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("30 picks give exactly 10 each", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 3)
		p, _ := testPool(t, Config{}, bs)
		for range 30 {
			b, err := p.Pick(netip.Addr{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			p.Done(b, time.Millisecond, Success)
		}
		for _, b := range bs {
			if b.Served() != 10 {
				t.Errorf("%s served %d, want 10", b.ID, b.Served())
			}
		}
	})
}

func TestWeightedRoundRobinSmooth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		weights []int
		down    []int
		picks   int
		want    string
	}{
		{name: "5 1 1", weights: []int{5, 1, 1}, picks: 21, want: strings.Repeat("aabacaa", 3)},
		{name: "equal weights", weights: []int{1, 1, 1}, picks: 9, want: strings.Repeat("abc", 3)},
		{name: "2 1", weights: []int{2, 1}, picks: 9, want: strings.Repeat("aba", 3)},
		{name: "3 2", weights: []int{3, 2}, picks: 10, want: strings.Repeat("ababa", 2)},
		{name: "5 1 1 with c down", weights: []int{5, 1, 1}, down: []int{2}, picks: 12, want: strings.Repeat("aaabaa", 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bs := backends(t, len(tt.weights), tt.weights...)
			p, _ := testPool(t, Config{Algorithm: AlgorithmWeightedRoundRobin}, bs)
			for _, i := range tt.down {
				setDown(p, bs[i], true)
			}
			if got := pickSeq(t, p, bs, tt.picks, nil); got != tt.want {
				t.Errorf("sequence %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("no burst of five with 5 1 1", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 3, 5, 1, 1)
		p, _ := testPool(t, Config{Algorithm: AlgorithmWeightedRoundRobin}, bs)
		// Rounds meet as "…a a | a a…": four in a row at most, never five.
		if got := pickSeq(t, p, bs, 700, nil); strings.Contains(got, "aaaaa") {
			t.Errorf("five a's in a row in %q", got[:70])
		}
	})
}

func TestLeastConnections(t *testing.T) {
	t.Parallel()
	t.Run("prefers the least busy", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 3)
		p, _ := testPool(t, Config{Algorithm: AlgorithmLeastConnections}, bs)
		bs[0].active.Add(2)
		bs[2].active.Add(1)
		for range 5 {
			b, err := p.Pick(netip.Addr{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if b != bs[1] {
				t.Fatalf("picked %s, want %s", b.ID, bs[1].ID)
			}
			p.Done(b, time.Millisecond, Success)
		}
		// Held requests even out the load: 2, 0, 1 in flight plus six
		// more make three each.
		var held []*Backend
		for range 6 {
			b, _ := p.Pick(netip.Addr{}, nil)
			held = append(held, b)
		}
		for _, b := range bs {
			if b.Active() != 3 {
				t.Errorf("%s has %d in flight, want 3", b.ID, b.Active())
			}
		}
		for _, b := range held {
			p.Done(b, time.Millisecond, Success)
		}
	})
	t.Run("ties spread at random", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 4)
		p, _ := testPool(t, Config{Algorithm: AlgorithmLeastConnections}, bs)
		const n = 4000
		pickSeq(t, p, bs, n, nil)
		for _, b := range bs {
			if s := b.Served(); s < n/4*8/10 || s > n/4*12/10 {
				t.Errorf("%s served %d of %d, want about %d", b.ID, s, n, n/4)
			}
		}
	})
	t.Run("randomness is injectable", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 3)
		var calls []uint64
		rnd := func(n uint64) uint64 { calls = append(calls, n); return uint64(len(calls)-1) % n }
		p, err := newPool("app", Config{Algorithm: AlgorithmLeastConnections, Logger: quiet()}, bs, newFakeClock(), rnd)
		if err != nil {
			t.Fatal(err)
		}
		if got := pickSeq(t, p, bs, 6, nil); got != "abcabc" {
			t.Errorf("sequence %q, want abcabc", got)
		}
		if len(calls) != 6 || calls[0] != 3 {
			t.Errorf("rand called with %v, want 3 six times", calls)
		}
	})
}

func TestLeastResponseTime(t *testing.T) {
	t.Parallel()
	bs := backends(t, 3)
	// Ties go to the first tied backend in list order.
	p, err := newPool("app", Config{Algorithm: AlgorithmLeastResponseTime, Logger: quiet()}, bs, newFakeClock(), func(uint64) uint64 { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	fast, slow, fresh := bs[0], bs[1], bs[2]
	outcome(t, p, fast, 10*time.Millisecond, Success)
	outcome(t, p, slow, 100*time.Millisecond, Success)

	pick := func() *Backend {
		t.Helper()
		b, err := p.Pick(netip.Addr{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// The unmeasured backend goes first so that it gets measured.
	if b := pick(); b != fresh {
		t.Fatalf("first pick %s, want the unmeasured %s", b.ID, fresh.ID)
	}
	// While its first request runs it is scored with the best latency
	// (10 ms × 2), so the fast one (10 ms × 1) goes next.
	if b := pick(); b != fast {
		t.Fatalf("second pick %s, want the fast %s", b.ID, fast.ID)
	}
	p.Done(fresh, 50*time.Millisecond, Success)
	p.Done(fast, 10*time.Millisecond, Success)

	// The fast backend takes load until its queue makes it slower than
	// the others: 10 ms × (active+1) against 50 ms and 100 ms.
	var held []*Backend
	for range 4 {
		b := pick()
		if b != fast {
			t.Fatalf("pick %d went to %s, want %s", len(held), b.ID, fast.ID)
		}
		held = append(held, b)
	}
	// fast now scores 10 × 5 = 50 ms, tied with fresh's 50 ms (the tie
	// goes to fast, first in order); at 6 in flight it is slower than fresh.
	held = append(held, pick())
	if b := pick(); b != fresh {
		t.Errorf("with the fast backend loaded, pick went to %s, want %s", b.ID, fresh.ID)
	} else {
		held = append(held, b)
	}
	for _, b := range held {
		p.Done(b, b.EWMA(), Success)
	}
	if slow.Served() != 1 {
		t.Errorf("slow backend served %d, want only its first request", slow.Served())
	}
}

func TestEWMA(t *testing.T) {
	t.Parallel()
	bs := backends(t, 1)
	p, _ := testPool(t, Config{}, bs)
	b := bs[0]
	steps := []struct {
		took time.Duration
		o    Outcome
		want time.Duration
	}{
		{100 * time.Millisecond, Success, 100 * time.Millisecond},    // first sample sets it
		{200 * time.Millisecond, Success, 120 * time.Millisecond},    // moves by 0.2
		{5 * time.Second, Canceled, 120 * time.Millisecond},          // canceled: no sample
		{time.Millisecond, ConnectFailure, 120 * time.Millisecond},   // nothing reached the backend
		{620 * time.Millisecond, Timeout, 220 * time.Millisecond},    // timeouts count
		{20 * time.Millisecond, ServerError, 180 * time.Millisecond}, // so do 5xx
	}
	for i, s := range steps {
		outcome(t, p, b, s.took, s.o)
		if got := b.EWMA(); (got - s.want).Abs() > time.Microsecond {
			t.Errorf("step %d (%v %v): EWMA %v, want %v", i, s.took, s.o, got, s.want)
		}
	}
	if b.Served() != uint64(len(steps)) || b.Active() != 0 {
		t.Errorf("served %d active %d, want %d and 0", b.Served(), b.Active(), len(steps))
	}
}

func TestIPHashConsistent(t *testing.T) {
	t.Parallel()
	const nClients = 10000
	clients := make([]netip.Addr, nClients)
	for i := range clients {
		if i%4 == 3 {
			clients[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		} else {
			clients[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		}
	}
	assign := func(p *Pool) []*Backend {
		out := make([]*Backend, nClients)
		for i, c := range clients {
			b, err := p.Pick(c, nil)
			if err != nil {
				t.Fatal(err)
			}
			p.Done(b, time.Millisecond, Success)
			out[i] = b
		}
		return out
	}
	for _, mode := range []string{"unhealthy", "removed"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			bs := backends(t, 10)
			p, _ := testPool(t, Config{Algorithm: AlgorithmIPHash}, bs)
			before := assign(p)
			counts := map[*Backend]int{}
			for _, b := range before {
				counts[b]++
			}
			for _, b := range bs {
				if c := counts[b]; c < nClients/10*7/10 || c > nClients/10*13/10 {
					t.Errorf("%s has %d clients, want about %d", b.ID, c, nClients/10)
				}
			}
			gone := bs[3]
			var p2 *Pool
			switch mode {
			case "unhealthy":
				setDown(p, gone, true)
				p2 = p
			case "removed":
				rest := append(append([]*Backend(nil), bs[:3]...), bs[4:]...)
				var err error
				if p2, err = newPool("app", Config{Algorithm: AlgorithmIPHash, Logger: quiet()}, rest, newFakeClock(), nil); err != nil {
					t.Fatal(err)
				}
			}
			after := assign(p2)
			moved := 0
			for i := range clients {
				if after[i] != before[i] {
					moved++
					if before[i] != gone {
						t.Fatalf("client %v moved from %s, which stayed", clients[i], before[i].ID)
					}
				}
			}
			if max := nClients/10 + nClients*2/100; moved > max {
				t.Errorf("%d clients moved, want at most %d", moved, max)
			}
			if moved != counts[gone] {
				t.Errorf("%d clients moved, want the %d of the removed backend", moved, counts[gone])
			}
			// The backend comes back: its clients return to it.
			if mode == "unhealthy" {
				setDown(p, gone, false)
			} else if err := p2.Add(gone); err != nil {
				t.Fatal(err)
			}
			back := assign(p2)
			for i := range clients {
				if back[i] != before[i] {
					t.Fatalf("client %v on %s after the return, was on %s", clients[i], back[i].ID, before[i].ID)
				}
			}
		})
	}
	t.Run("weights share clients", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 3, 2, 1, 1)
		p, _ := testPool(t, Config{Algorithm: AlgorithmIPHash}, bs)
		counts := map[*Backend]int{}
		for _, b := range assign(p) {
			counts[b]++
		}
		if c := counts[bs[0]]; c < nClients*45/100 || c > nClients*55/100 {
			t.Errorf("weight-2 backend has %d of %d clients, want about half", c, nClients)
		}
	})
	t.Run("excluded goes to the next choice", func(t *testing.T) {
		t.Parallel()
		bs := backends(t, 5)
		p, _ := testPool(t, Config{Algorithm: AlgorithmIPHash}, bs)
		c := netip.MustParseAddr("192.0.2.7")
		first, _ := p.Pick(c, nil)
		second, _ := p.Pick(c, []*Backend{first})
		again, _ := p.Pick(c, []*Backend{first})
		for _, b := range []*Backend{first, second, again} {
			p.Done(b, time.Millisecond, Success)
		}
		if second == first || again != second {
			t.Errorf("with %s excluded: %s then %s, want one other backend twice", first.ID, second.ID, again.ID)
		}
	})
}

func TestPickNoBackend(t *testing.T) {
	t.Parallel()
	for _, alg := range Algorithms() {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			empty, _ := testPool(t, Config{Algorithm: alg}, nil)
			if _, err := empty.Pick(netip.Addr{}, nil); !errors.Is(err, ErrNoBackend) {
				t.Errorf("empty pool: %v, want ErrNoBackend", err)
			}
			bs := backends(t, 3)
			p, _ := testPool(t, Config{Algorithm: alg}, bs)
			setDown(p, bs[0], true)
			if err := p.Drain(bs[1].ID); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Pick(netip.Addr{}, bs[2:]); !errors.Is(err, ErrNoBackend) {
				t.Errorf("down, draining and excluded: %v, want ErrNoBackend", err)
			}
			b, err := p.Pick(netip.Addr{}, nil)
			if err != nil || b != bs[2] {
				t.Fatalf("pick %v, %v, want the only available backend", b, err)
			}
			p.Done(b, time.Millisecond, Success)
			setDown(p, bs[2], true)
			if _, err := p.Pick(netip.Addr{}, nil); !errors.Is(err, ErrNoBackend) {
				t.Errorf("all unavailable: %v, want ErrNoBackend", err)
			}
			for _, b := range bs {
				if b.Active() != 0 {
					t.Errorf("%s has %d in flight after failed picks", b.ID, b.Active())
				}
			}
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, alg := range Algorithms() {
		t.Run(alg, func(t *testing.T) {
			bs := backends(t, 10, 1, 2, 3)
			p, _ := testPool(t, Config{Algorithm: alg}, bs)
			setDown(p, bs[4], true)
			client := netip.MustParseAddr("203.0.113.9")
			exclude := bs[:1]
			allocs := testing.AllocsPerRun(1000, func() {
				b, err := p.Pick(client, exclude)
				if err != nil {
					t.Fatal(err)
				}
				p.Done(b, time.Millisecond, Success)
			})
			if allocs != 0 {
				t.Errorf("%v allocations per Pick+Done, want 0", allocs)
			}
		})
	}
}

func TestNegLog2(t *testing.T) {
	t.Parallel()
	x := uint64(7)
	for range 100000 {
		x = mix64(x)
		want := -math.Log2(float64(x) / (1 << 64))
		if got := negLog2(x); math.Abs(got-want) > 2e-6 {
			t.Fatalf("negLog2(%d) = %v, want %v", x, got, want)
		}
	}
	for _, x := range []uint64{0, 1, 1 << 63, math.MaxUint64} {
		if got := negLog2(x); got <= 0 || got > 64 || math.IsNaN(got) {
			t.Errorf("negLog2(%d) = %v, want within (0, 64]", x, got)
		}
	}
}
