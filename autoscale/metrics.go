package autoscale

import "github.com/prometheus/client_golang/prometheus"

// Collector exports the state of controllers to Prometheus. The gateway
// registers it; this package never registers anything.
type Collector struct {
	controllers func() []*Controller

	desired, current, starting, observed, target, events, failures *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector of the controllers that controllers
// returns at each scrape. Metrics, all labelled with upstream:
//
//	scaleout_autoscale_desired_instances            instances asked of the provider
//	scaleout_autoscale_current_instances            ready instances at the last decision
//	scaleout_autoscale_starting_instances           instances starting or not healthy yet
//	scaleout_autoscale_metric_observed{metric}      the metric at the last decision (absent when missing)
//	scaleout_autoscale_metric_target{metric}        the target
//	scaleout_autoscale_scale_events_total{direction} changes of the desired size, up or down
//	scaleout_autoscale_provider_failures_total{type} start_failed, crashed, stop_failed
func NewCollector(controllers func() []*Controller) *Collector {
	d := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("scaleout_autoscale_"+name, help, append([]string{"upstream"}, extra...), nil)
	}
	return &Collector{
		controllers: controllers,
		desired:     d("desired_instances", "Instances the autoscaler asks the provider for."),
		current:     d("current_instances", "Ready instances at the last autoscaling decision."),
		starting:    d("starting_instances", "Instances starting or not yet healthy at the last decision."),
		observed:    d("metric_observed", "Value of the autoscaling metric at the last decision.", "metric"),
		target:      d("metric_target", "Target value of the autoscaling metric.", "metric"),
		events:      d("scale_events_total", "Changes of the desired number of instances, by direction.", "direction"),
		failures:    d("provider_failures_total", "Instances that failed to start, crashed or did not stop cleanly.", "type"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.desired, c.current, c.starting, c.observed, c.target, c.events, c.failures} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.controllers == nil {
		return
	}
	for _, ctl := range c.controllers() {
		if ctl == nil {
			continue
		}
		u := ctl.upstream
		ctl.mu.Lock()
		desired, current, starting, last := ctl.desired, ctl.current, ctl.starting, ctl.last
		metric, target := ctl.cfg.Metric, ctl.cfg.Target
		ctl.mu.Unlock()
		gauge := func(d *prometheus.Desc, v float64, l ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{u}, l...)...)
		}
		counter := func(d *prometheus.Desc, v uint64, l ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{u}, l...)...)
		}
		gauge(c.desired, float64(desired))
		gauge(c.current, float64(current))
		gauge(c.starting, float64(starting))
		if last != nil && !last.MetricMissing {
			gauge(c.observed, last.Observed, last.Metric)
		}
		gauge(c.target, target, metric)
		counter(c.events, ctl.events.count(EventScaleUp), "up")
		counter(c.events, ctl.events.count(EventScaleDown), "down")
		for _, t := range []string{EventStartFailed, EventCrashed, EventStopFailed} {
			counter(c.failures, ctl.events.count(t), t)
		}
	}
}
