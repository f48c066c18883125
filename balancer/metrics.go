package balancer

import "github.com/prometheus/client_golang/prometheus"

// Collector exports the state of pools to Prometheus. The gateway
// registers it; this package never registers anything.
type Collector struct {
	pools func() []*Pool

	up, state, active, ewma, failures *prometheus.Desc
	requests, changes, ejections      *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector of the pools that pools returns at
// each scrape (so that pools made by a reload are followed). Metrics, all
// labelled with upstream and backend:
//
//	scaleout_backend_up                      1 when the backend takes new requests
//	scaleout_backend_state{state}            1 for the backend's current state, 0 for the others
//	scaleout_backend_active_requests         requests in flight
//	scaleout_backend_ewma_seconds            latency average
//	scaleout_backend_consecutive_failures    failures since the last success
//	scaleout_backend_requests_total{outcome} requests completed, by outcome
//	scaleout_backend_state_changes_total{to} state changes, by new state
//	scaleout_backend_ejections_total         ejections by passive checks
func NewCollector(pools func() []*Pool) *Collector {
	l := []string{"upstream", "backend"}
	d := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("scaleout_backend_"+name, help, append(append([]string(nil), l...), extra...), nil)
	}
	return &Collector{
		pools:     pools,
		up:        d("up", "1 when the backend takes new requests, else 0."),
		state:     d("state", "1 for the backend's current state (healthy, unhealthy, draining), 0 for the others.", "state"),
		active:    d("active_requests", "Requests in flight on the backend."),
		ewma:      d("ewma_seconds", "Exponentially weighted moving average of the backend's response time."),
		failures:  d("consecutive_failures", "Failed requests since the backend's last success."),
		requests:  d("requests_total", "Requests the backend completed, by outcome.", "outcome"),
		changes:   d("state_changes_total", "Changes of the backend's state, by the state changed to.", "to"),
		ejections: d("ejections_total", "Ejections of the backend by passive health checks."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.state, c.active, c.ewma, c.failures, c.requests, c.changes, c.ejections} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.pools == nil {
		return
	}
	for _, p := range c.pools() {
		if p == nil {
			continue
		}
		for _, b := range p.Backends() {
			l := []string{p.Name(), b.ID}
			st := b.State()
			up := 0.0
			if st == Healthy {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, l...)
			for s := State(0); s < numStates; s++ {
				v := 0.0
				if s == st {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, append(l, s.String())...)
			}
			ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(b.Active()), l...)
			ch <- prometheus.MustNewConstMetric(c.ewma, prometheus.GaugeValue, b.EWMA().Seconds(), l...)
			ch <- prometheus.MustNewConstMetric(c.failures, prometheus.GaugeValue, float64(b.ConsecutiveFailures()), l...)
			for o := Outcome(0); o < numOutcomes; o++ {
				ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(b.outcomes[o].Load()), append(l, o.String())...)
			}
			for s := State(0); s < numStates; s++ {
				ch <- prometheus.MustNewConstMetric(c.changes, prometheus.CounterValue, float64(b.changes[s].Load()), append(l, s.String())...)
			}
			ch <- prometheus.MustNewConstMetric(c.ejections, prometheus.CounterValue, float64(b.Ejections()), l...)
		}
	}
}
