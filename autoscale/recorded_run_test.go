package autoscale

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The recorded run behind the benchmark in bench/autoscale: a step of load
// from low to high and back, served by an autoscaled pool and by a fixed
// pool of Min instances, sampled every second. It takes about 2.5 minutes,
// so it runs only when AUTOSCALE_BENCH_OUT names the directory for its
// CSV (build without -race):
//
//	AUTOSCALE_BENCH_OUT=$PWD/bench/autoscale go test -run TestRecordedRun -timeout 10m ./autoscale/

// runPhase is a stretch of constant offered load.
type runPhase struct {
	name string
	rps  int64
	dur  time.Duration
}

// The app: 50 ms per request, 4 at once per instance, so 80 rps of
// capacity per instance; the high phase needs 3 instances at full load.
var recordedPhases = []runPhase{
	{"low", 40, 15 * time.Second},
	{"high", 200, 40 * time.Second},
	{"low-again", 40, 35 * time.Second},
}

type secondStats struct {
	sent   int
	lat    []time.Duration
	errors int
}

func TestRecordedRun(t *testing.T) {
	out := os.Getenv("AUTOSCALE_BENCH_OUT")
	if out == "" {
		t.Skip("the recorded run is a benchmark: set AUTOSCALE_BENCH_OUT=dir to run it")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(out, "run.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := csv.NewWriter(f)
	_ = w.Write([]string{"mode", "t_s", "phase", "offered_rps", "sent_rps", "completed_rps", "errors", "instances", "p50_ms", "p99_ms"})
	for _, mode := range []string{"autoscale", "fixed"} {
		recordedRun(t, mode, w)
		w.Flush()
	}
	if err := w.Error(); err != nil {
		t.Fatal(err)
	}
}

func recordedRun(t *testing.T, mode string, w *csv.Writer) {
	pool := testPool(t)
	pcfg := appConfig("serve", "APP_LATENCY=50ms", "APP_WORKERS=4")
	prov, err := NewProcess("app", pool, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Min: 2, Max: 6, Metric: MetricInflight, Target: 3,
		Interval: time.Second, ScaleUp: ScaleUpPolicy{Period: 5 * time.Second, Window: 3 * time.Second},
		ScaleDownWindow: 15 * time.Second, Logger: quietLogger(),
	}
	if mode == "fixed" {
		cfg.Max = cfg.Min
	}
	c, err := New("app", pool, prov, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Error(err)
		}
	}()
	waitUntil(t, "2 ready", 30*time.Second, func() bool { return len(readyInstances(prov)) == 2 })

	var mu sync.Mutex
	start := time.Now()
	var secs []secondStats
	gen := &loadGen{pool: pool, client: &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64},
	}}
	gen.record = func(sent, end time.Time, ok bool) {
		i, j := int(end.Sub(start)/time.Second), int(sent.Sub(start)/time.Second)
		mu.Lock()
		defer mu.Unlock()
		for len(secs) <= max(i, j) {
			secs = append(secs, secondStats{})
		}
		secs[j].sent++
		if ok {
			secs[i].lat = append(secs[i].lat, end.Sub(sent))
		} else {
			secs[i].errors++
		}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() { gen.run(loadCtx); close(loadDone) }()

	type sample struct {
		phase     string
		offered   int64
		instances int
	}
	var samples []sample
	next := start
	for _, ph := range recordedPhases {
		gen.rate.Store(ph.rps)
		for range int(ph.dur / time.Second) {
			next = next.Add(time.Second)
			time.Sleep(time.Until(next))
			samples = append(samples, sample{ph.name, ph.rps, len(readyInstances(prov))})
		}
	}
	gen.rate.Store(0)
	stopLoad()
	<-loadDone // every request answered or failed

	mu.Lock()
	defer mu.Unlock()
	var all []time.Duration
	byPhase := map[string][]time.Duration{}
	errs := 0
	for i, s := range samples {
		var st secondStats
		if i < len(secs) {
			st = secs[i]
		}
		slices.Sort(st.lat)
		all = append(all, st.lat...)
		byPhase[s.phase] = append(byPhase[s.phase], st.lat...)
		errs += st.errors
		_ = w.Write([]string{mode, strconv.Itoa(i + 1), s.phase, strconv.FormatInt(s.offered, 10),
			strconv.Itoa(st.sent), strconv.Itoa(len(st.lat)), strconv.Itoa(st.errors), strconv.Itoa(s.instances),
			ms(quantile(st.lat, 0.50)), ms(quantile(st.lat, 0.99))})
	}
	slices.Sort(all)
	for _, ph := range recordedPhases {
		l := byPhase[ph.name]
		slices.Sort(l)
		t.Logf("%s, phase %s (%d req/s): %d requests, p50 %s ms, p99 %s ms", mode, ph.name, ph.rps, len(l), ms(quantile(l, 0.5)), ms(quantile(l, 0.99)))
	}
	status := c.Status()
	t.Logf("%s: %d requests, %d errors, p50 %s ms, p99 %s ms, max %s ms; %d scale-ups, %d scale-downs",
		mode, len(all)+errs, errs, ms(quantile(all, 0.5)), ms(quantile(all, 0.99)), ms(quantile(all, 1)), status.ScaleUps, status.ScaleDowns)
}

// quantile of sorted durations; 0 when empty.
func quantile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
