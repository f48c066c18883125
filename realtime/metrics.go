package realtime

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

type hubMetrics struct {
	accepted, refused                 atomic.Uint64
	in, out                           atomic.Uint64
	published, localOnly, received    atomic.Uint64
	slow, dead, duplicates            atomic.Uint64
	recovered, lostGaps, lostMessages atomic.Uint64
	outages, presenceErrors           atomic.Uint64
	lag                               prometheus.Histogram
}

func (m *hubMetrics) init() {
	m.lag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "scaleout_realtime_broker_lag_seconds",
		Help:    "Time from a publish on any node to its arrival from the broker on this node.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
	})
}

// Collector returns the hub's Prometheus metrics, named
// scaleout_realtime_*. The caller registers it.
func (h *Hub) Collector() prometheus.Collector { return hubCollector{h} }

type hubCollector struct{ h *Hub }

var (
	descConnections   = prometheus.NewDesc("scaleout_realtime_connections", "Open WebSocket connections.", nil, nil)
	descSubscriptions = prometheus.NewDesc("scaleout_realtime_subscriptions", "Channel subscriptions of open connections.", nil, nil)
	descChannels      = prometheus.NewDesc("scaleout_realtime_channels", "Channels with subscribers on this node.", nil, nil)
	descBrokerUp      = prometheus.NewDesc("scaleout_realtime_broker_up", "1 when the broker subscription is established.", nil, nil)
	descConnsTotal    = prometheus.NewDesc("scaleout_realtime_connections_total", "Connections by outcome: accepted, refused (bad token), slow (send queue full), dead (no pong).", []string{"outcome"}, nil)
	descMessages      = prometheus.NewDesc("scaleout_realtime_messages_total", "Messages: in (client frames), out (frames queued to clients), published (through this hub), received (from the broker), local_only (published while the broker was down).", []string{"kind"}, nil)
	descDrops         = prometheus.NewDesc("scaleout_realtime_dropped_total", "Broker messages not delivered: duplicate (already delivered), lost (missed and not in history; subscribers told to resync).", []string{"reason"}, nil)
	descGaps          = prometheus.NewDesc("scaleout_realtime_gaps_total", "Gaps in channel sequences: recovered messages filled from history, unrecovered gaps.", []string{"outcome"}, nil)
	descOutages       = prometheus.NewDesc("scaleout_realtime_broker_outages_total", "Times the broker subscription was lost.", nil, nil)
	descPresenceErrs  = prometheus.NewDesc("scaleout_realtime_presence_errors_total", "Failed presence updates in Redis.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c hubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descSubscriptions, descChannels, descBrokerUp, descConnsTotal, descMessages, descDrops, descGaps, descOutages, descPresenceErrs} {
		ch <- d
	}
	c.h.m.lag.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c hubCollector) Collect(ch chan<- prometheus.Metric) {
	h, s := c.h, c.h.Status()
	m := &h.m
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge(descConnections, float64(s.Connections))
	gauge(descSubscriptions, float64(s.Subscriptions))
	gauge(descChannels, float64(s.Channels))
	up := 0.0
	if s.BrokerUp {
		up = 1
	}
	gauge(descBrokerUp, up)
	counter(descConnsTotal, m.accepted.Load(), "accepted")
	counter(descConnsTotal, m.refused.Load(), "refused")
	counter(descConnsTotal, m.slow.Load(), "slow")
	counter(descConnsTotal, m.dead.Load(), "dead")
	counter(descMessages, m.in.Load(), "in")
	counter(descMessages, m.out.Load(), "out")
	counter(descMessages, m.published.Load(), "published")
	counter(descMessages, m.received.Load(), "received")
	counter(descMessages, m.localOnly.Load(), "local_only")
	counter(descDrops, m.duplicates.Load(), "duplicate")
	counter(descDrops, m.lostMessages.Load(), "lost")
	counter(descGaps, m.recovered.Load(), "recovered_messages")
	counter(descGaps, m.lostGaps.Load(), "unrecovered")
	counter(descOutages, m.outages.Load())
	counter(descPresenceErrs, m.presenceErrors.Load())
	m.lag.Collect(ch)
}
