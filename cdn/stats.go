package cdn

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are a Rewriter's running totals.
type counters struct {
	htmlPages, cssPages atomic.Int64
	references          atomic.Int64
	oversized           atomic.Int64
	directRequests      atomic.Int64
	directBytes         atomic.Int64
	cdnRequests         atomic.Int64
	cdnBytes            atomic.Int64
}

// Stats is a snapshot of a Rewriter's counters.
type Stats struct {
	// Route is the route name from the Config.
	Route string `json:"route"`
	// HTMLPages and CSSFiles count the bodies rewritten.
	HTMLPages int64 `json:"html_pages"`
	CSSFiles  int64 `json:"css_files"`
	// References counts asset URLs rewritten to the CDN host.
	References int64 `json:"references_rewritten"`
	// Oversized counts tokens or URLs too long to look at, copied through.
	Oversized int64 `json:"oversized"`
	// DirectRequests and DirectBytes count asset responses the origin
	// served straight to users: offload misses.
	DirectRequests int64 `json:"direct_requests"`
	DirectBytes    int64 `json:"direct_bytes"`
	// CDNRequests and CDNBytes count asset responses served to the CDN.
	CDNRequests int64 `json:"cdn_requests"`
	CDNBytes    int64 `json:"cdn_bytes"`
	// OffloadRatio is the share of asset bytes that the origin did not serve
	// directly to users: CDNBytes / (CDNBytes + DirectBytes), 0 before any
	// asset was served.
	OffloadRatio float64 `json:"offload_ratio"`
}

// Stats returns a snapshot of the counters.
func (r *Rewriter) Stats() Stats {
	s := Stats{
		Route:          r.cfg.Route,
		HTMLPages:      r.stats.htmlPages.Load(),
		CSSFiles:       r.stats.cssPages.Load(),
		References:     r.stats.references.Load(),
		Oversized:      r.stats.oversized.Load(),
		DirectRequests: r.stats.directRequests.Load(),
		DirectBytes:    r.stats.directBytes.Load(),
		CDNRequests:    r.stats.cdnRequests.Load(),
		CDNBytes:       r.stats.cdnBytes.Load(),
	}
	if t := s.CDNBytes + s.DirectBytes; t > 0 {
		s.OffloadRatio = float64(s.CDNBytes) / float64(t)
	}
	return s
}

// Collector exposes the counters of a set of Rewriters, one per route, as
// Prometheus metrics named scaleout_cdn_*. It is safe for concurrent use;
// routes may be added and removed while it is registered (hot reload).
type Collector struct {
	mu     sync.Mutex
	routes map[string]*Rewriter

	pages, refs, oversized, requests, bytes, ratio *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector with no routes. The caller registers it.
func NewCollector() *Collector {
	return &Collector{
		routes:    make(map[string]*Rewriter),
		pages:     prometheus.NewDesc("scaleout_cdn_bodies_rewritten_total", "HTML and CSS bodies passed through the CDN rewriter.", []string{"route", "type"}, nil),
		refs:      prometheus.NewDesc("scaleout_cdn_references_rewritten_total", "Asset references rewritten to the CDN host.", []string{"route"}, nil),
		oversized: prometheus.NewDesc("scaleout_cdn_oversized_tokens_total", "Tokens or URLs too long to inspect, copied through unchanged.", []string{"route"}, nil),
		requests:  prometheus.NewDesc("scaleout_cdn_asset_requests_total", "Asset requests served by the origin, by source: cdn (a CDN pull) or direct (a user bypassing the CDN).", []string{"route", "source"}, nil),
		bytes:     prometheus.NewDesc("scaleout_cdn_asset_bytes_total", "Asset response bytes served by the origin, by source: cdn or direct.", []string{"route", "source"}, nil),
		ratio:     prometheus.NewDesc("scaleout_cdn_offload_ratio", "Share of asset bytes the origin did not serve directly to users: cdn / (cdn + direct).", []string{"route"}, nil),
	}
}

// Set adds or replaces the Rewriter of a route, named by its Config.Route.
func (c *Collector) Set(r *Rewriter) {
	c.mu.Lock()
	c.routes[r.cfg.Route] = r
	c.mu.Unlock()
}

// Remove forgets a route.
func (c *Collector) Remove(route string) {
	c.mu.Lock()
	delete(c.routes, route)
	c.mu.Unlock()
}

// Stats returns the stats of every route, sorted by route.
func (c *Collector) Stats() []Stats {
	c.mu.Lock()
	out := make([]Stats, 0, len(c.routes))
	for _, r := range c.routes {
		out = append(out, r.Stats())
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Route < out[j].Route })
	return out
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pages, c.refs, c.oversized, c.requests, c.bytes, c.ratio} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.Stats() {
		ch <- prometheus.MustNewConstMetric(c.pages, prometheus.CounterValue, float64(s.HTMLPages), s.Route, "html")
		ch <- prometheus.MustNewConstMetric(c.pages, prometheus.CounterValue, float64(s.CSSFiles), s.Route, "css")
		ch <- prometheus.MustNewConstMetric(c.refs, prometheus.CounterValue, float64(s.References), s.Route)
		ch <- prometheus.MustNewConstMetric(c.oversized, prometheus.CounterValue, float64(s.Oversized), s.Route)
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(s.CDNRequests), s.Route, "cdn")
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(s.DirectRequests), s.Route, "direct")
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(s.CDNBytes), s.Route, "cdn")
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(s.DirectBytes), s.Route, "direct")
		ch <- prometheus.MustNewConstMetric(c.ratio, prometheus.GaugeValue, s.OffloadRatio, s.Route)
	}
}
