package gateway

import (
	"bytes"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/scaleout/scaleout/cdn"
	"github.com/scaleout/scaleout/config"
	"github.com/scaleout/scaleout/httpcache"
)

// route is one compiled routing rule.
type route struct {
	name      string
	host      string // exact host, "*.suffix" wildcard, or "" for any
	prefix    string
	upstream  *upstream
	cdn       *cdn.Rewriter           // nil: no CDN offloading on this route
	versions  *liveVersions           // asset versions for fingerprinting, or nil
	lastHost  *atomic.Pointer[string] // Host of the route's last page, for version rechecks
	cache     *httpcache.Options      // nil: no HTTP caching on this route
	cacheOpts httpcache.Options
	// setHeaders are the upstream's request_headers, copied here so that
	// the request path never reads the (reloadable) upstream config.
	setHeaders [][2]string
	// observeLatency feeds the autoscaler of an upstream scaled on latency.
	observeLatency bool
	// realtimePath is where this route serves the WebSocket hub, or "".
	realtimePath string
}

// router is an immutable routing table, swapped whole on reload.
type router struct {
	routes []route
}

func newRouter(rs []config.Route, ups map[string]*upstream, rewriters map[string]*cdnRoute) *router {
	r := &router{}
	for _, c := range rs {
		r.routes = append(r.routes, route{
			name:     c.Name,
			host:     strings.ToLower(c.Host),
			prefix:   c.PathPrefix,
			upstream: ups[c.Upstream],
		})
		if c.Realtime != nil {
			r.routes[len(r.routes)-1].realtimePath = c.Realtime.Path
		}
		if cr := rewriters[c.Name]; cr != nil {
			rt := &r.routes[len(r.routes)-1]
			rt.cdn, rt.versions = cr.rw, cr.versions
			rt.lastHost = &cr.lastHost
		}
		if u := ups[c.Upstream]; u != nil {
			rt := &r.routes[len(r.routes)-1]
			rt.observeLatency = u.cfg.Autoscale != nil && u.cfg.Autoscale.Metric == "latency_p95"
			for _, k := range sortedKeys(u.cfg.RequestHeaders) {
				rt.setHeaders = append(rt.setHeaders, [2]string{k, u.cfg.RequestHeaders[k]})
			}
		}
		if c.Cache != nil && c.Cache.Enabled {
			rt := &r.routes[len(r.routes)-1]
			rt.cacheOpts = httpcache.Options{
				DefaultTTL:     c.Cache.DefaultTTL.Std(),
				MaxObjectBytes: int64(c.Cache.MaxObjectBytes),
				StoreSetCookie: c.Cache.StoreSetCookie,
			}
			rt.cache = &rt.cacheOpts
		}
	}
	// Host-specific rules before catch-alls, then longer prefixes first;
	// among equals the order of the file decides.
	sort.SliceStable(r.routes, func(i, j int) bool {
		a, b := r.routes[i], r.routes[j]
		if (a.host != "") != (b.host != "") {
			return a.host != ""
		}
		return len(a.prefix) > len(b.prefix)
	})
	for i := range r.routes {
		if rt := &r.routes[i]; rt.versions != nil && rt.upstream != nil {
			f := versionRefresher(rt)
			rt.versions.refresh.Store(&f)
		}
	}
	return r
}

// match finds the route for a request; host may carry a port and any case.
func (r *router) match(host, path []byte) *route {
	var h string
	hostDone := false
	for i := range r.routes {
		rt := &r.routes[i]
		if rt.host != "" {
			if !hostDone { // only host rules pay for the lowered copy
				h, hostDone = hostOnly(host), true
			}
			if !hostMatches(rt.host, h) {
				continue
			}
		}
		if pathHasPrefix(path, rt.prefix) {
			return rt
		}
	}
	return nil
}

// pathHasPrefix matches on segment boundaries: /api matches /api and
// /api/x but not /apix. A prefix ending in / matches everything below it.
func pathHasPrefix(path []byte, prefix string) bool {
	if len(path) < len(prefix) || string(path[:len(prefix)]) != prefix {
		return false
	}
	if len(path) == len(prefix) || strings.HasSuffix(prefix, "/") {
		return true
	}
	c := path[len(prefix)]
	return c == '/' || c == '?'
}

func hostOnly(host []byte) string {
	h := host
	if len(h) > 0 && h[0] == '[' { // [::1]:8080
		if i := bytes.IndexByte(h, ']'); i > 0 {
			h = h[1:i]
		}
	} else if i := bytes.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.ToLower(string(h))
}

func hostMatches(pattern, host string) bool {
	if strings.HasPrefix(pattern, "*.") {
		return strings.HasSuffix(host, pattern[1:])
	}
	return pattern == host
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
