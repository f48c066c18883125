package balancer

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// Picker chooses the backend for a request. Pick returns an available
// backend of bs (Available reports true) that is not in exclude, or nil when
// there is none. It is called from many goroutines at once, on every
// request, and should not allocate. The pool re-checks the state of the
// backend Pick returns and counts the request in flight on it.
type Picker interface {
	Pick(bs []*Backend, client netip.Addr, exclude []*Backend) *Backend
}

var (
	_ Picker = (*RoundRobin)(nil)
	_ Picker = (*WeightedRoundRobin)(nil)
	_ Picker = (*LeastConnections)(nil)
	_ Picker = (*LeastResponseTime)(nil)
	_ Picker = (*IPHash)(nil)
)

// newPicker returns the picker named alg; randN (nil: math/rand/v2)
// breaks ties.
func newPicker(alg string, randN func(n uint64) uint64) (Picker, error) {
	switch alg {
	case AlgorithmRoundRobin:
		return &RoundRobin{}, nil
	case AlgorithmWeightedRoundRobin:
		return &WeightedRoundRobin{}, nil
	case AlgorithmLeastConnections:
		return &LeastConnections{Rand: randN}, nil
	case AlgorithmLeastResponseTime:
		return &LeastResponseTime{Rand: randN}, nil
	case AlgorithmIPHash:
		return &IPHash{}, nil
	}
	return nil, fmt.Errorf("algorithm %q: %w (want one of %s)", alg, ErrUnknownAlgorithm, strings.Join(Algorithms(), ", "))
}

// usable reports whether b may take this request.
func usable(b *Backend, exclude []*Backend) bool {
	if !b.Available() {
		return false
	}
	for _, x := range exclude {
		if x == b {
			return false
		}
	}
	return true
}

// RoundRobin takes the backends in turn. Sequential picks over n available
// backends give each exactly one of every n picks. A skipped backend (not
// available, or excluded) does not hand its turn to its neighbour: the turn
// moves past the backend that was picked, so the others keep equal shares.
// Weights are not used (see WeightedRoundRobin). The zero value is ready to
// use.
type RoundRobin struct {
	next atomic.Uint64
}

// Pick implements Picker.
func (r *RoundRobin) Pick(bs []*Backend, _ netip.Addr, exclude []*Backend) *Backend {
	n := uint64(len(bs))
	if n == 0 {
		return nil
	}
	t := r.next.Add(1) - 1
	i := t % n
	for d := range n {
		j := i + d
		if j >= n {
			j -= n
		}
		if b := bs[j]; usable(b, exclude) {
			if d > 0 {
				// Start the next turn after b, unless another pick
				// already moved on (then fairness is approximate).
				r.next.CompareAndSwap(t+1, t+1+d)
			}
			return b
		}
	}
	return nil
}

// WeightedRoundRobin is nginx's smooth weighted round-robin: deterministic,
// and it spreads a heavy backend's turns out (weights 5, 1, 1 give
// a a b a c a a) rather than sending them in a burst. Only available,
// non-excluded backends take part in a round. It serialises picks with a
// small mutex. The zero value is ready to use.
type WeightedRoundRobin struct {
	mu sync.Mutex
}

// Pick implements Picker.
func (w *WeightedRoundRobin) Pick(bs []*Backend, _ netip.Addr, exclude []*Backend) *Backend {
	w.mu.Lock()
	defer w.mu.Unlock()
	var (
		best           *Backend
		total, bestCur int64
	)
	for _, b := range bs {
		if !usable(b, exclude) {
			continue
		}
		wt := b.weight.Load()
		cur := b.wrrCurrent.Load() + wt
		b.wrrCurrent.Store(cur)
		total += wt
		if best == nil || cur > bestCur {
			best, bestCur = b, cur
		}
	}
	if best != nil {
		best.wrrCurrent.Store(bestCur - total)
	}
	return best
}

// LeastConnections picks the backend with the fewest requests in flight;
// ties are broken uniformly at random so that equal backends share the
// load. Weights are not used. The zero value is ready to use.
type LeastConnections struct {
	// Rand returns a uniform random number in [0, n). Default math/rand/v2.
	Rand func(n uint64) uint64
}

// Pick implements Picker.
func (l *LeastConnections) Pick(bs []*Backend, _ netip.Addr, exclude []*Backend) *Backend {
	var (
		first *Backend
		least int64 = math.MaxInt64
		ties  uint64
	)
	for _, b := range bs {
		if !usable(b, exclude) {
			continue
		}
		switch a := b.active.Load(); {
		case a < least:
			first, least, ties = b, a, 1
		case a == least:
			ties++
		}
	}
	if ties <= 1 {
		return first
	}
	k := randOr(l.Rand, ties)
	for _, b := range bs {
		if usable(b, exclude) && b.active.Load() == least {
			if k == 0 {
				return b
			}
			k--
		}
	}
	return first // the counts moved under us; first was a fair choice too
}

// LeastResponseTime picks the backend with the lowest score
// EWMA latency × (requests in flight + 1), so a fast backend gets more
// traffic until its queue makes it slower than the others. A backend with no
// latency sample yet and no request in flight is preferred, so that it gets
// measured; while busy it is scored with the best latency of the others.
// Ties are broken uniformly at random. The zero value is ready to use.
type LeastResponseTime struct {
	// Rand returns a uniform random number in [0, n). Default math/rand/v2.
	Rand func(n uint64) uint64
}

// Pick implements Picker.
func (l *LeastResponseTime) Pick(bs []*Backend, _ netip.Addr, exclude []*Backend) *Backend {
	// The best measured latency stands in for a busy backend's missing one.
	best := math.Inf(1)
	for _, b := range bs {
		if e := math.Float64frombits(b.ewmaNanos.Load()); e > 0 && e < best && usable(b, exclude) {
			best = e
		}
	}
	if math.IsInf(best, 1) {
		best = 1 // nothing measured yet: least connections
	}
	var (
		first *Backend
		least = math.Inf(1)
		ties  uint64
	)
	for _, b := range bs {
		if !usable(b, exclude) {
			continue
		}
		switch s := lrtScore(b, best); {
		case s < least:
			first, least, ties = b, s, 1
		case s == least:
			ties++
		}
	}
	if ties <= 1 {
		return first
	}
	k := randOr(l.Rand, ties)
	for _, b := range bs {
		if usable(b, exclude) && lrtScore(b, best) == least {
			if k == 0 {
				return b
			}
			k--
		}
	}
	return first
}

// lrtScore is b's least-response-time score; unmeasured backends use
// fallback as their latency, and score 0 while idle.
func lrtScore(b *Backend, fallback float64) float64 {
	e := math.Float64frombits(b.ewmaNanos.Load())
	a := b.active.Load()
	if e == 0 {
		if a == 0 {
			return 0
		}
		e = fallback
	}
	return e * float64(a+1)
}

func randOr(r func(uint64) uint64, n uint64) uint64 {
	if r == nil {
		return randUint64N(n)
	}
	return r(n) % n
}

// IPHash sends each client address to the same backend, by weighted
// rendezvous (highest random weight) hashing of the address and the
// backend's ID. When a backend becomes unavailable only its clients move,
// each to its own next choice; when it comes back they return to it. A
// backend of weight w gets about w shares of the clients. Each pick costs
// one hash per backend. The zero value is ready to use.
type IPHash struct{}

// Pick implements Picker.
func (IPHash) Pick(bs []*Backend, client netip.Addr, exclude []*Backend) *Backend {
	h := hashAddr(client)
	// With equal weights the weighted score orders backends exactly as the
	// raw hash does; skip the logarithms then.
	uniform := true
	for i := 1; i < len(bs); i++ {
		if bs[i].weight.Load() != bs[0].weight.Load() {
			uniform = false
			break
		}
	}
	var best *Backend
	if uniform {
		var top uint64
		for _, b := range bs {
			if x := mix64(h ^ b.seed.Load()); (best == nil || x > top) && usable(b, exclude) {
				best, top = b, x
			}
		}
		return best
	}
	// Weighted rendezvous: the backend with the least -log(u)/weight wins,
	// u uniform in (0, 1) from the hash, which gives each backend a share
	// of clients proportional to its weight.
	least := math.Inf(1)
	for _, b := range bs {
		if !usable(b, exclude) {
			continue
		}
		if s := negLog2(mix64(h^b.seed.Load())) / float64(b.weight.Load()); s < least {
			best, least = b, s
		}
	}
	return best
}

// negLog2 returns -log2(x / 2^64), within 2e-6, for x > 0 (0 is taken as
// 1). It is several times faster than math.Log, which would dominate
// ip-hash's cost on large pools.
func negLog2(x uint64) float64 {
	lz := bits.LeadingZeros64(x | 1)
	// x / 2^64 = f × 2^-(lz+1) with f in [1, 2) made of the bits after
	// the leading one.
	f := math.Float64frombits(0x3FF0000000000000 | (x<<uint(lz+1))>>12)
	// ln f = 2 atanh(s), s = (f-1)/(f+1) in [0, 1/3): a short series.
	s := (f - 1) / (f + 1)
	s2 := s * s
	lnf := 2 * s * (1 + s2*(1.0/3+s2*(1.0/5+s2*(1.0/7+s2/9))))
	return float64(lz+1) - lnf/math.Ln2
}

// hashAddr hashes a client address (its zone ignored).
func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	lo := binary.LittleEndian.Uint64(b[:8])
	hi := binary.LittleEndian.Uint64(b[8:])
	return mix64(hi ^ mix64(lo^0x9e3779b97f4a7c15))
}

// mix64 is the splitmix64 finalizer: a bijection that spreads every input
// bit over the whole output.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
