package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scaleout/scaleout/balancer"
)

// ErrRunning is returned by Run when the controller already runs.
var ErrRunning = errors.New("controller already running")

// samplesPerInterval is how often per Interval the inflight metric is
// sampled; the decision uses their mean.
const samplesPerInterval = 4

// Controller keeps the number of instances of one upstream at the target
// of its metric.
type Controller struct {
	upstream string
	cfg      Config
	pool     Pool
	prov     Provider
	log      *slog.Logger
	events   *eventLog
	running  atomic.Bool

	mu       sync.Mutex
	desired  int
	recs     []stamped // recommendations within the scale-down window
	ups      []stamped // instances added within the scale-up period
	current  int       // ready instances at the last decision
	starting int
	last     *Decision
	decided  bool // a decision was made

	// Metric state between decisions.
	inflightSum float64
	inflightN   int
	inflightOn  int // ready instances the accumulated samples were taken on
	prevAt      time.Time
	prevServed  map[string]uint64
	prevCPU     map[string]time.Duration
}

type stamped struct {
	at time.Time
	n  int
}

// Decision is the outcome of one evaluation, with its inputs.
type Decision struct {
	Time          time.Time `json:"time"`
	Metric        string    `json:"metric"`
	Observed      float64   `json:"observed"`
	MetricMissing bool      `json:"metric_missing,omitempty"`
	Target        float64   `json:"target"`
	// Current is the number of ready instances.
	Current int `json:"current"`
	// Recommendation is ceil(current × observed / target), clamped, before
	// the stabilization window and the scale-up policy.
	Recommendation int `json:"recommendation"`
	// Desired is the number of instances asked for.
	Desired int    `json:"desired"`
	Reason  string `json:"reason"`
}

// New returns a controller of the named upstream that measures pool and
// scales through prov, with cfg's defaults filled in. It fails on an
// invalid cfg, naming the problem, and on the cpu metric with a provider
// that does not measure CPU.
func New(upstream string, pool Pool, prov Provider, cfg Config) (*Controller, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("autoscale %s: %w", upstream, err)
	}
	if pool == nil || prov == nil {
		return nil, fmt.Errorf("autoscale %s: a pool and a provider are required", upstream)
	}
	if _, ok := prov.(CPUSource); cfg.Metric == MetricCPU && !ok {
		return nil, fmt.Errorf("autoscale %s: metric cpu: the provider does not measure CPU", upstream)
	}
	return &Controller{
		upstream: upstream,
		cfg:      cfg,
		pool:     pool,
		prov:     prov,
		log:      cfg.Logger.With("upstream", upstream),
		events:   newEventLog(cfg.Events),
		desired:  cfg.Min,
	}, nil
}

// Upstream returns the name of the controlled upstream.
func (c *Controller) Upstream() string { return c.upstream }

// Config returns the configuration with its defaults filled in.
func (c *Controller) Config() Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

// Update replaces the configuration, for a reload, while the controller
// runs; the instances, the desired size and the recommendation history
// stay. The new bounds apply at the next decision; a new metric starts
// from a fresh measurement. The clock, the event list's size and the
// provider stay those given to New. On error nothing changes.
func (c *Controller) Update(cfg Config) error {
	c.mu.Lock()
	cfg.Clock, cfg.Events = c.cfg.Clock, c.cfg.Events
	c.mu.Unlock()
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("autoscale %s: %w", c.upstream, err)
	}
	if _, ok := c.prov.(CPUSource); cfg.Metric == MetricCPU && !ok {
		return fmt.Errorf("autoscale %s: metric cpu: the provider does not measure CPU", c.upstream)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cfg.Metric != c.cfg.Metric {
		c.inflightSum, c.inflightN, c.inflightOn = 0, 0, 0
		c.prevAt, c.prevServed, c.prevCPU = time.Time{}, nil, nil
	}
	c.cfg = cfg
	c.log = cfg.Logger.With("upstream", c.upstream)
	return nil
}

// Run asks the provider for Min instances, runs it, and evaluates the
// metric every Interval until ctx is done; then it waits for the provider
// to stop its instances (for Process: drained, then terminated, so at most
// DrainTimeout + StopGrace) and returns nil. It returns the provider's error if
// the provider stops early, and ErrRunning if it already runs.
func (c *Controller) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	c.prov.Scale(c.desired)
	c.mu.Unlock()
	provDone := make(chan error, 1)
	go func() { provDone <- c.prov.Run(ctx, c.record) }()

	// The period is read again at each tick: Update may change it.
	period := func() time.Duration { return max(c.Config().Interval/samplesPerInterval, time.Millisecond) }
	t := time.NewTimer(period())
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			<-provDone
			return nil
		case err := <-provDone:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = errors.New("returned early")
			}
			return fmt.Errorf("autoscale %s: provider stopped: %w", c.upstream, err)
		case <-t.C:
			t.Reset(period())
			c.sample()
			if n%samplesPerInterval == 0 {
				c.Evaluate()
			}
		}
	}
}

// record keeps, logs and counts an event.
func (c *Controller) record(e Event) {
	c.mu.Lock()
	if e.Time.IsZero() {
		e.Time = c.cfg.Clock.Now()
	}
	if e.Desired == 0 && e.Type != EventScaleDown && e.Type != EventScaleUp {
		e.Desired, e.Current = c.desired, c.current
	}
	log := c.log
	c.mu.Unlock()
	c.events.add(e)
	logEvent(log, e)
}

// ready returns the pool backends of the provider's ready instances that
// the balancer considers healthy, and the number of instances starting.
func (c *Controller) ready() (ready []*balancer.Backend, starting int) {
	byID := map[string]*balancer.Backend{}
	for _, b := range c.pool.Backends() {
		if b.State() == balancer.Healthy {
			byID[b.ID] = b
		}
	}
	for _, in := range c.prov.Instances() {
		switch in.State {
		case Starting:
			starting++
		case Ready:
			if b := byID[in.Backend]; b != nil {
				ready = append(ready, b)
			} else {
				starting++ // in the pool but not healthy (yet)
			}
		}
	}
	return ready, starting
}

// sample takes one sample of the inflight metric.
func (c *Controller) sample() {
	if c.Config().Metric != MetricInflight {
		return
	}
	ready, _ := c.ready()
	if len(ready) == 0 {
		return
	}
	var sum int64
	for _, b := range ready {
		sum += b.Active()
	}
	c.mu.Lock()
	if len(ready) != c.inflightOn {
		// Samples taken on another set of instances say nothing about
		// the load on this one.
		c.inflightSum, c.inflightN, c.inflightOn = 0, 0, len(ready)
	}
	c.inflightSum += float64(sum) / float64(len(ready))
	c.inflightN++
	c.mu.Unlock()
}

// Evaluate measures the metric, decides the number of instances and tells
// the provider. Run calls it every Interval; it is exported for tests and
// tools that drive a controller on their own clock.
func (c *Controller) Evaluate() Decision {
	cfg := c.Config()
	now := cfg.Clock.Now()
	ready, starting := c.ready()
	var cpu map[string]time.Duration
	if src, ok := c.prov.(CPUSource); ok && cfg.Metric == MetricCPU {
		cpu = src.CPUTimes()
	}
	var p95 time.Duration
	var p95ok bool
	if cfg.Metric == MetricLatencyP95 {
		p95, p95ok = cfg.Latency.P95(c.upstream)
	}

	c.mu.Lock()
	if c.cfg.Metric != cfg.Metric { // updated meanwhile: measure next time
		d := Decision{Time: now, Metric: cfg.Metric, MetricMissing: true, Desired: c.desired, Reason: "configuration changed"}
		c.mu.Unlock()
		return d
	}
	observed, ok := c.observeLocked(now, ready, cpu, p95, p95ok)
	prev := c.desired
	d := c.decideLocked(now, len(ready), observed, ok)
	c.current, c.starting = len(ready), starting
	c.last = &d
	if d.Desired != prev {
		c.prov.Scale(d.Desired)
	}
	c.mu.Unlock()

	if d.Desired != prev {
		typ := EventScaleUp
		if d.Desired < prev {
			typ = EventScaleDown
		}
		c.record(Event{
			Time: now, Type: typ, Metric: d.Metric, Observed: d.Observed, MetricMissing: d.MetricMissing,
			Target: d.Target, Current: d.Current, Desired: d.Desired,
			Reason: fmt.Sprintf("%d → %d: %s", prev, d.Desired, d.Reason),
		})
	} else {
		c.Config().Logger.Debug("autoscale decision", "upstream", c.upstream, "metric", d.Metric, "observed", d.Observed, "missing", d.MetricMissing,
			"current", d.Current, "desired", d.Desired, "reason", d.Reason)
	}
	return d
}

// observeLocked returns the metric over the ready backends, or false when
// there is none to observe.
func (c *Controller) observeLocked(now time.Time, ready []*balancer.Backend, cpu map[string]time.Duration, p95 time.Duration, p95ok bool) (float64, bool) {
	dt := now.Sub(c.prevAt).Seconds()
	first := c.prevAt.IsZero() || dt <= 0
	c.prevAt = now
	switch c.cfg.Metric {
	case MetricInflight:
		sum, n, on := c.inflightSum, c.inflightN, c.inflightOn
		c.inflightSum, c.inflightN = 0, 0
		if n > 0 && on == len(ready) {
			return sum / float64(n), true
		}
		if len(ready) == 0 {
			return 0, false
		}
		var s int64
		for _, b := range ready {
			s += b.Active()
		}
		return float64(s) / float64(len(ready)), true
	case MetricRPS:
		served := make(map[string]uint64, len(ready))
		var delta uint64
		n := 0
		for _, b := range ready {
			v := b.Served()
			served[b.ID] = v
			if old, ok := c.prevServed[b.ID]; ok && v >= old {
				delta += v - old
				n++
			}
		}
		c.prevServed = served
		if first || n == 0 {
			return 0, false
		}
		return float64(delta) / dt / float64(n), true
	case MetricCPU:
		prev := c.prevCPU
		c.prevCPU = cpu
		var used time.Duration
		n := 0
		for _, b := range ready {
			v, ok := cpu[b.ID]
			old, had := prev[b.ID]
			if ok && had && v >= old {
				used += v - old
				n++
			}
		}
		if first || n == 0 {
			return 0, false
		}
		return 100 * used.Seconds() / dt / float64(n), true
	case MetricLatencyP95:
		if len(ready) == 0 || !p95ok {
			return 0, false
		}
		return p95.Seconds(), true
	}
	return 0, false
}

// decideLocked turns an observation into the desired number of instances,
// applying the tolerance, the stabilization window, the scale-up policy
// and the bounds, and remembers it.
func (c *Controller) decideLocked(now time.Time, current int, observed float64, ok bool) Decision {
	cfg := c.cfg
	prev := c.desired
	d := Decision{Time: now, Metric: cfg.Metric, Observed: observed, MetricMissing: !ok, Target: cfg.Target, Current: current}
	rec := prev
	switch ratio := observed / cfg.Target; {
	case !ok || current == 0:
		d.MetricMissing = true
		d.Reason = "no metric from a ready instance: holding"
	case ratio > 1+cfg.Tolerance:
		raw := ceilInt(float64(current) * ratio)
		rec = max(raw, prev)
		d.Reason = fmt.Sprintf("%s %.3g above target %.3g on %d ready: %d wanted", cfg.Metric, observed, cfg.Target, current, raw)
	case ratio < 1-cfg.Tolerance:
		raw := ceilInt(float64(current) * ratio)
		rec = min(raw, prev)
		d.Reason = fmt.Sprintf("%s %.3g below target %.3g on %d ready: %d wanted", cfg.Metric, observed, cfg.Target, current, raw)
	default:
		d.Reason = fmt.Sprintf("%s %.3g within %.0f%% of target %.3g", cfg.Metric, observed, 100*cfg.Tolerance, cfg.Target)
	}
	rec = min(max(rec, cfg.Min), cfg.Max)
	d.Recommendation = rec
	desired := rec

	if !c.decided {
		// Nothing is known of the load before the first decision: the
		// starting size counts as a recommendation, so that no scale-in
		// comes before one window of observation.
		c.decided = true
		c.recs = append(c.recs, stamped{now, prev})
	}
	if !d.MetricMissing {
		c.recs = append(c.recs, stamped{now, rec})
	}
	c.recs = pruneBefore(c.recs, now.Add(-max(cfg.ScaleDownWindow, cfg.ScaleUp.Window)))
	if desired < prev {
		hi := desired
		for _, r := range c.recs {
			if r.at.After(now.Add(-cfg.ScaleDownWindow)) {
				hi = max(hi, r.n)
			}
		}
		if hi > desired {
			desired = min(hi, prev)
			d.Reason += fmt.Sprintf("; %d held by the %v scale-down window", desired, cfg.ScaleDownWindow)
		}
	}

	if desired > prev && cfg.ScaleUp.Window > 0 {
		lo := desired
		for _, r := range c.recs {
			if r.at.After(now.Add(-cfg.ScaleUp.Window)) {
				lo = min(lo, r.n)
			}
		}
		if lo < desired {
			desired = max(lo, prev)
			d.Reason += fmt.Sprintf("; %d held by the %v scale-up window", desired, cfg.ScaleUp.Window)
		}
	}

	c.ups = pruneBefore(c.ups, now.Add(-cfg.ScaleUp.Period))
	if desired > prev {
		added := 0
		for _, u := range c.ups {
			added += u.n
		}
		base := max(prev-added, 0)
		limit := max(ceilInt(float64(base)*(1+float64(cfg.ScaleUp.Percent)/100)), base+cfg.ScaleUp.Instances, cfg.Min)
		if desired > limit {
			desired = max(limit, prev)
			d.Reason += fmt.Sprintf("; limited to %d by the scale-up policy (+%d%% or +%d per %v)", desired, cfg.ScaleUp.Percent, cfg.ScaleUp.Instances, cfg.ScaleUp.Period)
		}
		if desired > prev {
			c.ups = append(c.ups, stamped{now, desired - prev})
		}
	}
	desired = min(max(desired, cfg.Min), cfg.Max)
	c.desired = desired
	d.Desired = desired
	return d
}

// pruneBefore drops the entries older than or at t (the slice is in time
// order).
func pruneBefore(s []stamped, t time.Time) []stamped {
	i := 0
	for i < len(s) && !s[i].at.After(t) {
		i++
	}
	return append(s[:0], s[i:]...)
}

// ceilInt rounds x up, forgiving the float error of a product that should
// be whole (2 × 1.5 must give 3, not 4).
func ceilInt(x float64) int {
	if x <= 0 || math.IsNaN(x) {
		return 0
	}
	if x > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(math.Ceil(x - 1e-9))
}
