package autoscale

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Metric names accepted in Config.Metric.
const (
	// MetricInflight is the average number of requests in flight per ready
	// instance. Target unit: requests.
	MetricInflight = "inflight"
	// MetricRPS is the number of requests completed per second per ready
	// instance. Target unit: requests per second.
	MetricRPS = "rps"
	// MetricLatencyP95 is the 95th percentile of the upstream's response
	// time, from Config.Latency. Target unit: seconds.
	MetricLatencyP95 = "latency_p95"
	// MetricCPU is the CPU used per ready instance, measured by the
	// provider (see CPUSource). Target unit: percent of one core.
	MetricCPU = "cpu"
)

// Metrics returns the accepted metric names.
func Metrics() []string {
	return []string{MetricInflight, MetricRPS, MetricLatencyP95, MetricCPU}
}

// ErrUnknownMetric is wrapped by the error New returns for a metric name it
// does not know.
var ErrUnknownMetric = errors.New("unknown metric")

// defaultTarget is the target used when Config.Target is zero; false for
// an unknown metric.
func defaultTarget(metric string) (float64, bool) {
	switch metric {
	case MetricInflight:
		return 10, true
	case MetricRPS:
		return 100, true
	case MetricLatencyP95:
		return 0.2, true
	case MetricCPU:
		return 70, true
	}
	return 0, false
}

// Config configures a Controller. The zero value works: between 1 and 10
// instances, tracking 10 requests in flight per instance, evaluated every
// 15 s, with a 10 % tolerance, scale-out by at most +100 % or +4 instances
// per 15 s and a 5 min scale-in stabilization window.
type Config struct {
	// Min is the smallest number of instances. Default 1.
	Min int
	// Max is the largest number of instances. Default 10, and never less
	// than Min.
	Max int
	// Metric is one of inflight (the default), rps, latency_p95, cpu.
	Metric string
	// Target is the value of the metric to keep each instance at, in the
	// metric's unit (requests, requests per second, seconds, percent of
	// one core). Default 10 in flight, 100 rps, 0.2 s, 70 %.
	Target float64
	// Tolerance is the relative band around the target inside which
	// nothing changes. Default 0.1 (±10 %).
	Tolerance float64
	// Interval is the time between two decisions. Default 15 s.
	Interval time.Duration
	// ScaleUp bounds how fast the pool grows.
	ScaleUp ScaleUpPolicy
	// ScaleDownWindow is the stabilization window of scale-in: the
	// desired size never drops below the highest recommendation made
	// within it. Default 5 min; negative means no window.
	ScaleDownWindow time.Duration
	// Events is how many events Status keeps. Default 100.
	Events int
	// Latency is where latency_p95 comes from; required for that metric.
	Latency LatencySource
	// Logger receives the events. Default slog.Default().
	Logger *slog.Logger
	// Clock tells the time of decisions and events. Default the wall
	// clock; tests drive a simulated one.
	Clock Clock
}

// ScaleUpPolicy bounds scale-out: within any Period, the pool grows to at
// most the larger of (size at the start of the period) × (1 + Percent/100)
// and (size at the start) + Instances.
type ScaleUpPolicy struct {
	// Percent of growth allowed per period. Default 100 (double).
	Percent int
	// Instances that may be added per period whatever the percentage.
	// Default 4; negative means none.
	Instances int
	// Period of the policy. Default 15 s.
	Period time.Duration
	// Window is the stabilization window of scale-out: the desired size
	// never rises above the lowest recommendation made within it, so that
	// a spike shorter than the window does not add instances. Default 0:
	// scale out on the first high recommendation.
	Window time.Duration
}

// Clock is a source of time.
type Clock interface {
	Now() time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Min < 0 || c.Max < 0 {
		return c, fmt.Errorf("min %d, max %d: must not be negative", c.Min, c.Max)
	}
	if c.Min == 0 {
		c.Min = 1
	}
	if c.Max == 0 {
		c.Max = max(10, c.Min)
	}
	if c.Max < c.Min {
		return c, fmt.Errorf("max %d is below min %d", c.Max, c.Min)
	}
	if c.Metric == "" {
		c.Metric = MetricInflight
	}
	def, ok := defaultTarget(c.Metric)
	if !ok {
		return c, fmt.Errorf("metric %q (want one of %v): %w", c.Metric, Metrics(), ErrUnknownMetric)
	}
	if c.Metric == MetricLatencyP95 && c.Latency == nil {
		return c, fmt.Errorf("metric %s needs a latency source", c.Metric)
	}
	if c.Target < 0 {
		return c, fmt.Errorf("target %v: must be positive", c.Target)
	}
	if c.Target == 0 {
		c.Target = def
	}
	if c.Tolerance < 0 || c.Tolerance >= 1 {
		return c, fmt.Errorf("tolerance %v: must be within 0-1", c.Tolerance)
	}
	if c.Tolerance == 0 {
		c.Tolerance = 0.1
	}
	if c.Interval < 0 || c.ScaleUp.Period < 0 || c.ScaleUp.Percent < 0 || c.ScaleUp.Window < 0 {
		return c, fmt.Errorf("interval %v, scale-up period %v, percent %d, window %v: must not be negative",
			c.Interval, c.ScaleUp.Period, c.ScaleUp.Percent, c.ScaleUp.Window)
	}
	if c.Interval == 0 {
		c.Interval = 15 * time.Second
	}
	if c.ScaleUp.Percent == 0 {
		c.ScaleUp.Percent = 100
	}
	switch {
	case c.ScaleUp.Instances == 0:
		c.ScaleUp.Instances = 4
	case c.ScaleUp.Instances < 0:
		c.ScaleUp.Instances = 0
	}
	if c.ScaleUp.Period == 0 {
		c.ScaleUp.Period = 15 * time.Second
	}
	switch {
	case c.ScaleDownWindow == 0:
		c.ScaleDownWindow = 5 * time.Minute
	case c.ScaleDownWindow < 0:
		c.ScaleDownWindow = 0
	}
	if c.Events <= 0 {
		c.Events = 100
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	return c, nil
}
