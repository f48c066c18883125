package autoscale

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestLatenciesPercentile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		samples func(observe func(time.Duration))
		want    time.Duration // exact p95 of the samples
	}{
		{"uniform 1-100ms", func(o func(time.Duration)) {
			for i := 1; i <= 100; i++ {
				o(time.Duration(i) * time.Millisecond)
			}
		}, 95 * time.Millisecond},
		{"slow tail", func(o func(time.Duration)) {
			for range 90 {
				o(2 * time.Millisecond)
			}
			for range 10 {
				o(time.Second)
			}
		}, time.Second},
		{"all fast", func(o func(time.Duration)) {
			for range 1000 {
				o(300 * time.Microsecond)
			}
		}, 300 * time.Microsecond},
		{"below the first bucket", func(o func(time.Duration)) { o(time.Microsecond) }, latencyMin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var l Latencies
			tt.samples(func(d time.Duration) { l.Observe("app", d) })
			got, ok := l.P95("app")
			if !ok {
				t.Fatal("no p95")
			}
			// Buckets are 10% wide: the answer is the upper bound of the
			// bucket that holds the true value.
			if got < tt.want || float64(got) > 1.1*float64(tt.want)+1 {
				t.Fatalf("p95 %v, want %v within +10%%", got, tt.want)
			}
			if _, ok := l.P95("other"); ok {
				t.Fatal("p95 of an upstream without samples")
			}
		})
	}
}

func TestLatenciesWindowSlides(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := &Latencies{Window: 10 * time.Second, Now: clock.Now}
	for range 100 {
		l.Observe("app", time.Second)
	}
	clock.Advance(5 * time.Second)
	for range 100 {
		l.Observe("app", time.Millisecond)
	}
	if got, _ := l.P95("app"); got < time.Second {
		t.Fatalf("p95 %v with half the window at 1s, want about 1s", got)
	}
	clock.Advance(6 * time.Second) // the 1 s samples leave the window
	if got, _ := l.P95("app"); got > 2*time.Millisecond {
		t.Fatalf("p95 %v after the slow samples left the window, want about 1ms", got)
	}
	clock.Advance(10 * time.Second)
	if d, ok := l.P95("app"); ok {
		t.Fatalf("p95 %v after the window passed with no sample, want none", d)
	}
}

func TestLatenciesConcurrentUse(t *testing.T) {
	t.Parallel()
	var l Latencies
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			up := fmt.Sprint("up", g%2)
			for i := range 1000 {
				l.Observe(up, time.Duration(i)*time.Microsecond)
				if i%100 == 0 {
					l.P95(up)
				}
			}
		})
	}
	wg.Wait()
	if _, ok := l.P95("up0"); !ok {
		t.Fatal("no samples")
	}
}

func BenchmarkLatenciesObserve(b *testing.B) {
	var l Latencies
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(1, 2))
		for pb.Next() {
			l.Observe("app", time.Duration(r.IntN(int(time.Second))))
		}
	})
}

func BenchmarkEvaluate(b *testing.B) {
	t := &testing.T{}
	s := newSim(t, Config{Min: 10, Max: 10, Metric: MetricRPS, Target: 10}, 0)
	s.prov.advance()
	b.ReportAllocs()
	for b.Loop() {
		s.clock.Advance(time.Second)
		s.c.Evaluate()
	}
}
