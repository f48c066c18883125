package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the proxy's collectors. Children for one upstream are
// looked up once and cached in its upstream, so that the request path does
// no label hashing.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	retries  *prometheus.CounterVec
	errors   *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scaleout_requests_total",
			Help: "Requests proxied, by upstream and status code sent to the client.",
		}, []string{"upstream", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "scaleout_request_duration_seconds",
			Help:    "Time from receiving a request to sending the end of its response, by upstream.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"upstream"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scaleout_retries_total",
			Help: "Requests sent to another backend after a failed try, by upstream.",
		}, []string{"upstream"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scaleout_upstream_errors_total",
			Help: "Failed tries, by upstream and kind (connect, connect_timeout, pool_full, send, receive, timeout, bad_response, status, no_backend, client_body, body_too_large).",
		}, []string{"upstream", "kind"}),
	}
}

// Collector returns the proxy's Prometheus collectors as one, for the
// gateway to register: scaleout_requests_total{upstream,code},
// scaleout_request_duration_seconds{upstream},
// scaleout_retries_total{upstream} and
// scaleout_upstream_errors_total{upstream,kind}.
func (p *Proxy) Collector() prometheus.Collector { return p.metrics }

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.requests.Describe(ch)
	m.duration.Describe(ch)
	m.retries.Describe(ch)
	m.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.requests.Collect(ch)
	m.duration.Collect(ch)
	m.retries.Collect(ch)
	m.errors.Collect(ch)
}

// upstream is the per-upstream state of the proxy: retry budget and cached
// metric children.
type upstream struct {
	name     string
	budget   *budget
	duration prometheus.Observer
	retries  prometheus.Counter
	errors   [numFailKinds]prometheus.Counter

	codesMu sync.Mutex
	codes   [600]atomic.Pointer[counterBox]
	m       *metrics
}

type counterBox struct{ c prometheus.Counter }

// upstream returns the state of the named upstream, creating it on first use.
func (p *Proxy) upstream(name string) *upstream {
	p.mu.RLock()
	u := p.ups[name]
	p.mu.RUnlock()
	if u != nil {
		return u
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if u = p.ups[name]; u != nil {
		return u
	}
	u = &upstream{
		name:     name,
		budget:   newBudget(p.cfg.Retries),
		duration: p.metrics.duration.WithLabelValues(name),
		retries:  p.metrics.retries.WithLabelValues(name),
		m:        p.metrics,
	}
	for k := failKind(1); k < numFailKinds; k++ {
		u.errors[k] = p.metrics.errors.WithLabelValues(name, failKindNames[k])
	}
	p.ups[name] = u
	return u
}

// count counts one request answered with code.
func (u *upstream) count(code int) {
	if code < 0 || code >= len(u.codes) {
		code = 0
	}
	if b := u.codes[code].Load(); b != nil {
		b.c.Inc()
		return
	}
	u.codesMu.Lock()
	b := u.codes[code].Load()
	if b == nil {
		b = &counterBox{c: u.m.requests.WithLabelValues(u.name, strconv.Itoa(code))}
		u.codes[code].Store(b)
	}
	u.codesMu.Unlock()
	b.c.Inc()
}
