package autoscale

import (
	"math"
	"sync"
	"time"
)

// LatencySource gives the recent 95th percentile response time of an
// upstream; false when there is no recent sample.
type LatencySource interface {
	P95(upstream string) (time.Duration, bool)
}

// Latency histogram: log-spaced buckets, each 10 % wider than the last,
// from latencyMin up; a percentile is accurate to within 10 %.
const (
	latencyMin     = 50 * time.Microsecond
	latencyGrowth  = 1.1
	latencyBuckets = 160 // up to about 50 µs × 1.1^159 ≈ 190 s
)

// Latencies keeps the response times of each upstream over a sliding
// window (Window, default 30 s, in one-second slots) and answers P95; the
// proxy feeds it with Observe. The zero value is ready to use.
type Latencies struct {
	// Window is how far back percentiles look. Default 30 s.
	Window time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time

	mu  sync.RWMutex
	ups map[string]*latencyRing
}

var _ LatencySource = (*Latencies)(nil)

type latencySlot struct {
	sec    int64 // unix second the slot holds; 0 = empty
	counts [latencyBuckets]uint32
	n      uint32
}

type latencyRing struct {
	mu    sync.Mutex
	slots []latencySlot
}

func (l *Latencies) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *Latencies) window() int {
	if l.Window <= 0 {
		return 30
	}
	return max(int(l.Window/time.Second), 1)
}

func (l *Latencies) ring(upstream string) *latencyRing {
	l.mu.RLock()
	r := l.ups[upstream]
	l.mu.RUnlock()
	if r != nil {
		return r
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ups == nil {
		l.ups = map[string]*latencyRing{}
	}
	r = l.ups[upstream]
	if r == nil {
		r = &latencyRing{slots: make([]latencySlot, l.window())}
		l.ups[upstream] = r
	}
	return r
}

func latencyBucket(d time.Duration) int {
	if d <= latencyMin {
		return 0
	}
	i := int(math.Log(float64(d)/float64(latencyMin))/math.Log(latencyGrowth)) + 1
	return min(i, latencyBuckets-1)
}

// latencyUpper is the upper bound of bucket i.
func latencyUpper(i int) time.Duration {
	return time.Duration(float64(latencyMin) * math.Pow(latencyGrowth, float64(i)))
}

// Observe records one response time of upstream.
func (l *Latencies) Observe(upstream string, d time.Duration) {
	sec := l.now().Unix()
	r := l.ring(upstream)
	b := latencyBucket(d)
	r.mu.Lock()
	s := &r.slots[int(sec%int64(len(r.slots)))]
	if s.sec != sec {
		*s = latencySlot{sec: sec}
	}
	s.counts[b]++
	s.n++
	r.mu.Unlock()
}

// P95 returns the 95th percentile of upstream's response times within the
// window (the upper bound of its bucket), or false without samples.
func (l *Latencies) P95(upstream string) (time.Duration, bool) {
	return l.Percentile(upstream, 0.95)
}

// Percentile returns the q-quantile (0 < q ≤ 1) of upstream's response
// times within the window, or false without samples.
func (l *Latencies) Percentile(upstream string, q float64) (time.Duration, bool) {
	sec := l.now().Unix()
	r := l.ring(upstream)
	var counts [latencyBuckets]uint64
	var n uint64
	r.mu.Lock()
	for i := range r.slots {
		s := &r.slots[i]
		if s.sec == 0 || s.sec <= sec-int64(len(r.slots)) || s.sec > sec {
			continue
		}
		for b, c := range s.counts {
			counts[b] += uint64(c)
		}
		n += uint64(s.n)
	}
	r.mu.Unlock()
	if n == 0 {
		return 0, false
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for b, c := range counts {
		seen += c
		if seen >= rank && c > 0 {
			return latencyUpper(b), true
		}
	}
	return latencyUpper(latencyBuckets - 1), true
}
