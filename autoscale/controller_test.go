package autoscale

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestStepInLoadScalesUpWithinTwoIntervals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cfg       Config
		low, high float64
	}{
		{"inflight", Config{Min: 2, Max: 10, Metric: MetricInflight, Target: 10}, 15, 60},
		{"rps", Config{Min: 2, Max: 10, Metric: MetricRPS, Target: 10}, 15, 60},
		{"latency_p95", Config{Min: 2, Max: 10, Metric: MetricLatencyP95, Target: 0.2}, 0.15, 0.6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, tt.cfg, 30*time.Second)
			for i, d := range s.run(20, func(int) float64 { return tt.low }) {
				if d.Desired != 2 {
					t.Fatalf("low load, interval %d: desired %d, want 2 (%s)", i, d.Desired, d.Reason)
				}
			}
			ds := s.run(2, func(int) float64 { return tt.high })
			if ds[1].Desired <= 2 {
				t.Fatalf("two intervals after a step from %v to %v: desired %d, want more than 2 (%s; %s)", tt.low, tt.high, ds[1].Desired, ds[0].Reason, ds[1].Reason)
			}
			if len(s.events) == 0 || s.events[0].Type != EventScaleUp || s.events[0].Metric != tt.cfg.Metric || s.events[0].Current != 2 {
				t.Fatalf("events %+v: want a scale_up with its inputs", s.events)
			}
		})
	}
}

func TestScaleUpReachesTheTargetAndSettles(t *testing.T) {
	t.Parallel()
	s := newSim(t, Config{Min: 2, Max: 10, Target: 10}, 30*time.Second)
	s.run(4, func(int) float64 { return 10 })
	s.run(40, func(int) float64 { return 60 }) // 10 min
	if got := s.readyCount(); got != 6 {
		t.Fatalf("after 10 min at 60 in flight with target 10: %d ready, want 6", got)
	}
	n := len(s.events)
	s.run(240, func(int) float64 { return 60 }) // 1 h
	if len(s.events) != n {
		t.Fatalf("steady load at the right size caused events: %+v", s.events[n:])
	}
}

func TestScaleUpPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy ScaleUpPolicy
		want   []int // desired after each interval of a huge load
	}{
		{"default: double or +4 per 15s", ScaleUpPolicy{}, []int{6, 12, 24, 48, 50}},
		{"double per 15s", ScaleUpPolicy{Percent: 100, Instances: -1}, []int{4, 8, 16, 32, 50}},
		{"+50% per 30s", ScaleUpPolicy{Percent: 50, Instances: -1, Period: 30 * time.Second}, []int{3, 3, 5, 5, 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Instances are ready at once; the load keeps each at 10× target.
			s := newSim(t, Config{Min: 2, Max: 50, Metric: MetricLatencyP95, Target: 0.1, ScaleUp: tt.policy}, 0)
			s.run(1, func(int) float64 { return 0.1 })
			for i, want := range tt.want {
				d := s.interval(1)
				if d.Desired != want {
					t.Fatalf("interval %d: desired %d, want %d (%s)", i, d.Desired, want, d.Reason)
				}
			}
		})
	}
}

func TestScaleUpWindowIgnoresShortSpikes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		window   time.Duration
		spike    int // intervals of 15 s at 3× the target
		wantUpAt int // interval of the first scale-up, -1 for none
	}{
		{"no window: first high decision", 0, 1, 0},
		{"spike shorter than the window", time.Minute, 3, -1},
		{"load as long as the window", time.Minute, 8, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, Config{Min: 2, Max: 10, Target: 10, ScaleUp: ScaleUpPolicy{Window: tt.window}}, 0)
			s.run(10, func(int) float64 { return 20 })
			upAt := -1
			for i, d := range s.run(tt.spike, func(int) float64 { return 60 }) {
				if d.Desired > 2 && upAt < 0 {
					upAt = i
				}
			}
			if upAt != tt.wantUpAt {
				t.Fatalf("first scale-up at interval %d of the spike, want %d (events %+v)", upAt, tt.wantUpAt, s.events)
			}
		})
	}
}

func TestNoisySteadyLoadCausesNoScaleEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		mean float64
	}{
		// 9 per instance on 4 instances, ±20%: 7.2–10.8 around a target of 10.
		{"inflight", Config{Min: 2, Max: 10, Metric: MetricInflight, Target: 10}, 36},
		{"rps", Config{Min: 2, Max: 10, Metric: MetricRPS, Target: 10}, 36},
		{"latency_p95", Config{Min: 4, Max: 10, Metric: MetricLatencyP95, Target: 0.2}, 0.18},
	}
	for _, tt := range tests {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				rng := rand.New(rand.NewPCG(seed, 42))
				noisy := func(int) float64 { return tt.mean * (0.8 + 0.4*rng.Float64()) }
				// Start at the size the mean load needs: 4.
				s := newSim(t, tt.cfg, 0)
				s.c.desired = 4
				s.prov.Scale(4)
				s.run(280, noisy) // 70 min
				if len(s.events) != 0 {
					t.Fatalf("seed %d: %d scale events in 70 min of noisy steady load: first %+v", seed, len(s.events), s.events[0])
				}
				if got := s.readyCount(); got != 4 {
					t.Fatalf("seed %d: %d instances, want 4", seed, got)
				}
			})
		}
	}
}

func TestScaleDownWaitsTheWindow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		window time.Duration
	}{
		{"default 5 min", 0},
		{"2 min", 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, Config{Min: 2, Max: 10, Target: 10, ScaleDownWindow: tt.window}, 30*time.Second)
			window := s.c.cfg.ScaleDownWindow
			interval := s.c.cfg.Interval
			s.run(20, func(int) float64 { return 60 })
			if got := s.c.Status().Desired; got != 6 {
				t.Fatalf("desired %d at high load, want 6", got)
			}
			drop := s.clock.Now()
			var downAt time.Time
			for range int(2*window/interval) + 4 {
				d := s.interval(5)
				if d.Desired < 6 && downAt.IsZero() {
					downAt = d.Time
					if d.Desired != 2 {
						t.Fatalf("scaled down to %d, want 2 (%s)", d.Desired, d.Reason)
					}
				}
			}
			if downAt.IsZero() {
				t.Fatalf("no scale-down within %v of the load drop", 2*window)
			}
			if waited := downAt.Sub(drop); waited < window-interval || waited > window+interval {
				t.Fatalf("scaled down %v after the load dropped, want the %v window (±%v)", waited, window, interval)
			}
			var down []Event
			for _, e := range s.events {
				if e.Type == EventScaleDown {
					down = append(down, e)
				}
			}
			if len(down) != 1 || down[0].Observed >= 10 || down[0].Desired != 2 {
				t.Fatalf("scale-down events %+v: want one, to 2, with the low observed value", down)
			}
		})
	}
}

func TestMinAndMaxAreRespected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		min, max int
		load     float64
		want     int
	}{
		{"huge load stops at max", 2, 5, 200, 5},
		{"no load stops at min", 3, 10, 0, 3},
		{"min equals max", 4, 4, 200, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, Config{Min: tt.min, Max: tt.max, Target: 10, ScaleDownWindow: time.Minute}, 15*time.Second)
			for i, d := range s.run(60, func(int) float64 { return tt.load }) {
				if d.Desired < tt.min || d.Desired > tt.max {
					t.Fatalf("interval %d: desired %d outside [%d, %d]", i, d.Desired, tt.min, tt.max)
				}
			}
			if got := s.c.Status().Desired; got != tt.want {
				t.Fatalf("desired %d, want %d", got, tt.want)
			}
			if got := len(s.prov.Instances()); got != tt.want {
				t.Fatalf("%d instances, want %d", got, tt.want)
			}
		})
	}
}

func TestMissingMetricNeverScalesIn(t *testing.T) {
	t.Parallel()
	t.Run("latency source without samples", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, Config{Min: 1, Max: 10, Metric: MetricLatencyP95, Target: 0.1, ScaleDownWindow: time.Minute}, 0)
		s.run(4, func(int) float64 { return 0.5 })
		size := s.c.Status().Desired
		if size <= 1 {
			t.Fatalf("desired %d after high latency, want a scale-up", size)
		}
		for i, d := range s.run(240, func(int) float64 { return 0 }) { // 0: no sample
			if !d.MetricMissing || d.Desired != size {
				t.Fatalf("interval %d with no latency sample: desired %d (missing %v), want %d held", i, d.Desired, d.MetricMissing, size)
			}
		}
	})
	t.Run("no ready instance", func(t *testing.T) {
		t.Parallel()
		// Instances never become ready: the metric is missing for good.
		s := newSim(t, Config{Min: 3, Max: 10, Metric: MetricRPS, Target: 100, ScaleDownWindow: time.Minute}, 1000*time.Hour)
		for i, d := range s.run(240, func(int) float64 { return 0 }) {
			if !d.MetricMissing || d.Desired != 3 || d.Current != 0 {
				t.Fatalf("interval %d: %+v, want desired 3 held with the metric missing", i, d)
			}
		}
		if len(s.events) != 0 {
			t.Fatalf("events %+v, want none", s.events)
		}
	})
}

func TestNotReadyInstancesAreExcluded(t *testing.T) {
	t.Parallel()
	t.Run("starting instances are not capacity", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, Config{Min: 2, Max: 10, Target: 10}, 0) // the first 2 ready at once
		s.prov.mu.Lock()
		s.prov.startDelay = time.Hour
		s.prov.mu.Unlock()
		d := s.interval(60) // 30 per ready instance → 6
		if d.Current != 2 || d.Desired != 6 {
			t.Fatalf("%+v: want current 2, desired 6", d)
		}
		// Four are starting, none ready yet: the load on the 2 ready is
		// unchanged, so the desired size stays; the starting ones do not
		// dilute the metric into a scale-in.
		for i, d := range s.run(40, func(int) float64 { return 60 }) {
			if d.Current != 2 || d.Observed != 30 || d.Desired != 6 {
				t.Fatalf("interval %d: %+v: want current 2, observed 30, desired 6", i, d)
			}
		}
		if st := s.c.Status(); st.Starting != 4 || st.Current != 2 {
			t.Fatalf("status current %d starting %d, want 2 and 4", st.Current, st.Starting)
		}
	})
	t.Run("unhealthy or draining backends do not feed the metric", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, Config{Min: 4, Max: 10, Target: 10}, 0)
		s.prov.advance()
		if err := s.pool.Drain(s.prov.Instances()[0].Backend); err != nil {
			t.Fatal(err)
		}
		// 30 in flight over the 3 that take traffic: 10 each, on target.
		for i, d := range s.run(10, func(int) float64 { return 30 }) {
			if d.Current != 3 || d.Observed != 10 || d.Desired != 4 {
				t.Fatalf("interval %d: %+v: want current 3, observed 10, desired 4", i, d)
			}
		}
	})
}

func TestToleranceBand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		tolerance float64
		perInst   float64 // load per instance, target 10
		want      int     // from 4 instances
	}{
		{"inside default band above", 0, 10.9, 4},
		{"inside default band below", 0, 9.1, 4},
		{"outside default band above", 0, 11.5, 5},
		{"wider band holds", 0.3, 12.5, 4},
		{"exact ratio gives whole number", 0, 15, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, Config{Min: 4, Max: 10, Metric: MetricLatencyP95, Target: 0.01, Tolerance: tt.tolerance}, 0)
			d := s.interval(tt.perInst / 1000)
			if d.Desired != tt.want {
				t.Fatalf("desired %d, want %d (%s)", d.Desired, tt.want, d.Reason)
			}
		})
	}
}

func TestConfigErrorsNameTheProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string
		is   error
	}{
		{"unknown metric", Config{Metric: "memory"}, `metric "memory"`, ErrUnknownMetric},
		{"max below min", Config{Min: 5, Max: 3}, "max 3 is below min 5", nil},
		{"negative min", Config{Min: -1}, "must not be negative", nil},
		{"negative target", Config{Target: -2}, "target -2", nil},
		{"tolerance too big", Config{Tolerance: 1.5}, "tolerance 1.5", nil},
		{"latency without source", Config{Metric: MetricLatencyP95}, "latency source", nil},
		{"negative interval", Config{Interval: -time.Second}, "interval -1s", nil},
		{"negative scale-up window", Config{ScaleUp: ScaleUpPolicy{Window: -time.Second}}, "window -1s", nil},
	}
	pool := newSim(t, Config{}, 0).pool
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New("app", pool, &simProvider{}, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "autoscale app") {
				t.Fatalf("error %v, want one naming %q and the upstream", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("error %v is not %v", err, tt.is)
			}
		})
	}
	t.Run("cpu needs a provider that measures it", func(t *testing.T) {
		_, err := New("app", pool, &simProvider{}, Config{Metric: MetricCPU})
		if err == nil || !strings.Contains(err.Error(), "does not measure CPU") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("zero value works", func(t *testing.T) {
		c, err := New("app", pool, &simProvider{}, Config{})
		if err != nil {
			t.Fatal(err)
		}
		got := c.Config()
		if got.Min != 1 || got.Max != 10 || got.Metric != MetricInflight || got.Target != 10 || got.Tolerance != 0.1 ||
			got.Interval != 15*time.Second || got.ScaleDownWindow != 5*time.Minute || got.ScaleUp.Percent != 100 || got.ScaleUp.Instances != 4 {
			t.Fatalf("defaults %+v", got)
		}
	})
}

func TestStatusAndMetrics(t *testing.T) {
	t.Parallel()
	s := newSim(t, Config{Min: 2, Max: 10, Target: 10, Events: 3}, 0)
	s.run(2, func(int) float64 { return 20 })
	s.run(1, func(int) float64 { return 60 })
	s.c.record(Event{Type: EventCrashed, Instance: "app-1", Reason: "test", Error: "exit status 1"})
	s.c.record(Event{Type: EventStartFailed, Instance: "app-2", Reason: "test", Error: "boom"})
	s.c.record(Event{Type: EventStartFailed, Instance: "app-3", Reason: "test", Error: "boom"})

	st := s.c.Status()
	if st.Desired != 6 || st.ScaleUps != 1 || st.ProviderFailures != 3 || len(st.Events) != 3 || st.LastDecision == nil {
		t.Fatalf("status %+v", st)
	}
	if st.Events[0].Type != EventCrashed || st.Events[2].Instance != "app-3" {
		t.Fatalf("events %+v: want the last 3, oldest first", st.Events)
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"upstream":"app"`, `"desired":6`, `"last_decision":{`, `"events":[`, `"provider_failures":3`} {
		if !strings.Contains(string(raw), key) {
			t.Fatalf("status JSON %s lacks %s", raw, key)
		}
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() []*Controller { return []*Controller{s.c} }))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	series := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			series++
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() != "upstream" {
					key += "," + l.GetValue()
				}
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"scaleout_autoscale_desired_instances":                    6,
		"scaleout_autoscale_current_instances":                    2,
		"scaleout_autoscale_metric_observed,inflight":             30,
		"scaleout_autoscale_metric_target,inflight":               10,
		"scaleout_autoscale_scale_events_total,up":                1,
		"scaleout_autoscale_scale_events_total,down":              0,
		"scaleout_autoscale_provider_failures_total,crashed":      1,
		"scaleout_autoscale_provider_failures_total,start_failed": 2,
		"scaleout_autoscale_provider_failures_total,stop_failed":  0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if series != 10 {
		t.Errorf("%d series, want 10: %v", series, got)
	}
}

func TestUpdateKeepsTheStateAndAppliesTheNewBounds(t *testing.T) {
	t.Parallel()
	s := newSim(t, Config{Min: 2, Max: 10, Target: 10}, 0)
	s.run(6, func(int) float64 { return 60 })
	if got := s.c.Status().Desired; got != 6 {
		t.Fatalf("desired %d, want 6", got)
	}
	if err := s.c.Update(Config{Min: 2, Max: 10, Target: 10, Metric: "memory"}); err == nil || !errors.Is(err, ErrUnknownMetric) {
		t.Fatalf("update with a bad metric: %v", err)
	}
	if got := s.c.Config().Metric; got != MetricInflight {
		t.Fatalf("a failed update changed the metric to %q", got)
	}
	if err := s.c.Update(Config{Min: 2, Max: 4, Target: 10, Metric: MetricRPS}); err != nil {
		t.Fatal(err)
	}
	d := s.interval(60) // rps: no previous sample yet
	if d.Desired != 4 || !d.MetricMissing {
		t.Fatalf("first decision after the update: %+v, want 4 (the new max) with the new metric not measured yet", d)
	}
	if len(s.prov.Instances()) != 4 {
		t.Fatalf("%d instances, want 4", len(s.prov.Instances()))
	}
	if got := s.c.Config().ScaleDownWindow; got != 5*time.Minute {
		t.Fatalf("defaults not applied on update: window %v", got)
	}
}
