package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// gatewayMetrics are the gateway's own counters.
type gatewayMetrics struct {
	reloads *prometheus.CounterVec
}

func newGatewayMetrics() *gatewayMetrics {
	return &gatewayMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scaleout_config_reloads_total",
			Help: "Configuration reloads by result (ok, error).",
		}, []string{"result"}),
	}
}

func (m *gatewayMetrics) reload(err error) {
	if err != nil {
		m.reloads.WithLabelValues("error").Inc()
	} else {
		m.reloads.WithLabelValues("ok").Inc()
	}
}

// Describe implements prometheus.Collector.
func (m *gatewayMetrics) Describe(ch chan<- *prometheus.Desc) { m.reloads.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *gatewayMetrics) Collect(ch chan<- prometheus.Metric) { m.reloads.Collect(ch) }

// proxyCollector gathers the metrics of every upstream's proxy. It is an
// unchecked collector (it describes nothing) because upstreams come and go
// with reloads; their series differ by the upstream label.
type proxyCollector struct{ g *Gateway }

// Describe implements prometheus.Collector.
func (proxyCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c proxyCollector) Collect(ch chan<- prometheus.Metric) {
	c.g.mu.Lock()
	ups := make([]*upstream, 0, len(c.g.ups))
	for _, u := range c.g.ups {
		ups = append(ups, u)
	}
	c.g.mu.Unlock()
	for _, u := range ups {
		u.proxy.Collector().Collect(ch)
	}
}
