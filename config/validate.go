package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scaleout/scaleout/balancer"
	"github.com/scaleout/scaleout/cdn"
)

func (c *Config) applyDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = "127.0.0.1:9901"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	s := &c.Server
	def(&s.ReadHeaderTimeout, Duration(10*time.Second))
	def(&s.IdleTimeout, Duration(60*time.Second))
	def(&s.MaxHeaderBytes, 16<<10)
	def(&s.MaxBodyBytes, 10<<20)
	def(&s.BodyReadTimeout, Duration(60*time.Second))
	def(&s.GracePeriod, Duration(30*time.Second))
	for _, u := range c.Upstreams {
		if u == nil {
			continue
		}
		if u.Algorithm == "" {
			u.Algorithm = "round-robin"
		}
		for i := range u.Backends {
			def(&u.Backends[i].Weight, 1)
		}
		h := &u.Health
		if h.Method == "" {
			h.Method = "GET"
		}
		def(&h.Interval, Duration(5*time.Second))
		if h.Timeout == 0 {
			h.Timeout = min(Duration(2*time.Second), h.Interval)
		}
		if h.ExpectStatus == "" {
			h.ExpectStatus = "200-399"
		}
		def(&h.UnhealthyAfter, 3)
		def(&h.HealthyAfter, 2)
		p := &u.Passive
		if p.Enabled == nil {
			t := true
			p.Enabled = &t
		}
		def(&p.Failures, 5)
		def(&p.EjectFor, Duration(10*time.Second))
		def(&p.MaxEjectFor, Duration(5*time.Minute))
		def(&p.MaxEjectedPercent, 50)
		if u.Retries.Max == 0 {
			u.Retries.Max = 2
		}
		def(&u.Retries.BudgetPercent, 20)
		def(&u.Timeouts.Dial, Duration(2*time.Second))
		def(&u.Timeouts.ResponseHeader, Duration(30*time.Second))
		def(&u.Timeouts.Idle, Duration(90*time.Second))
		def(&u.MaxConnsPerBackend, 512)
		def(&u.DrainTimeout, Duration(30*time.Second))
	}
	def(&c.Cache.Memory.MaxBytes, 64<<20)
	if c.Cache.Redis.Prefix == "" {
		c.Cache.Redis.Prefix = "scaleout:http:"
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Cache != nil {
			def(&r.Cache.MaxObjectBytes, 1<<20)
		}
		if r.PathPrefix == "" {
			r.PathPrefix = "/"
		}
		if r.Name == "" {
			r.Name = r.Host + r.PathPrefix
		}
	}
}

func def[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

func (c *Config) validate(v *validator) {
	checkListen(v, "listen", c.Listen)
	checkListen(v, "admin.listen", c.Admin.Listen)
	if c.Admin.Token == "" && !IsLoopback(c.Admin.Listen) {
		v.errf("admin.listen", "%s is not loopback: set admin.token, or listen on 127.0.0.1", c.Admin.Listen)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		v.errf("tls", "set both cert and key, or neither")
	} else if c.TLS.Cert != "" {
		for field, f := range map[string]string{"tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key} {
			if _, err := os.Stat(f); err != nil {
				v.errf(field, "cannot read %s: %v", f, errors.Unwrap(err))
			}
		}
	}
	if c.Listen == c.Admin.Listen && !strings.HasSuffix(c.Listen, ":0") {
		v.errf("admin.listen", "%s is also the data-plane listen address", c.Admin.Listen)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		v.errf("log.level", "unknown level %q (want debug, info, warn or error)", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		v.errf("log.format", "unknown format %q (want text or json)", c.Log.Format)
	}
	for i, s := range c.Server.TrustedProxies {
		if _, err := parsePrefix(s); err != nil {
			v.errf(fmt.Sprintf("server.trusted_proxies.%d", i), "%q is not an address or CIDR", s)
		}
	}
	if len(c.Upstreams) == 0 {
		v.errf("upstreams", "no upstream is defined")
	}
	for _, name := range c.Names() {
		c.validateUpstream(v, name)
	}
	rt := &c.Realtime
	if rt.Broker == "" {
		rt.Broker = "memory"
	}
	switch rt.Broker {
	case "memory", "nats":
	case "redis":
		if rt.RedisURL == "" {
			v.errf("realtime.redis_url", "the redis broker needs redis_url")
		}
	default:
		v.errf("realtime.broker", "unknown broker %q (want memory, redis or nats)", rt.Broker)
	}
	if rt.Broker == "nats" && rt.NATSURL == "" {
		rt.NATSURL = "nats://127.0.0.1:4222"
	}
	if rt.Broker == "nats" && rt.RedisURL == "" {
		v.errf("realtime.redis_url", "the nats broker needs redis_url for channel history and presence across nodes")
	}
	if rt.SendQueue < 0 {
		v.errf("realtime.send_queue", "%d is negative", rt.SendQueue)
	}
	if rt.HistorySize > 100000 {
		v.errf("realtime.history_size", "%d is more than 100000 messages per channel", rt.HistorySize)
	}
	for i, ch := range rt.AnonymousChannels {
		if strings.HasPrefix(ch, "$") || strings.ContainsAny(ch, " \t\r\n") || ch == "" {
			v.errf(fmt.Sprintf("realtime.anonymous_channels.%d", i), "%q is not a channel name or prefix", ch)
		}
	}
	if c.hasRealtimeRoute() && rt.Secret == "" && !rt.AllowAnonymous {
		v.errf("realtime.secret", "no connection could ever be accepted: set a secret to sign tokens with, or allow_anonymous")
	}
	if u := rt.RedisURL; u != "" && !strings.HasPrefix(u, "redis://") && !strings.HasPrefix(u, "rediss://") {
		v.errf("realtime.redis_url", "%q is not a redis:// URL", u)
	}
	if u := c.Cache.Redis.URL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "redis" && pu.Scheme != "rediss" && pu.Scheme != "unix") || (pu.Scheme != "unix" && pu.Host == "") {
			v.errf("cache.redis.url", "%q is not a redis:// URL", u)
		}
	}
	if len(c.Routes) == 0 {
		v.errf("routes", "no route is defined: add one with path_prefix and upstream")
	}
	names := map[string]int{}
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes.%d", i)
		if j, dup := names[r.Name]; dup {
			v.errf(p, "route %q is already defined by route %d: give one a distinct name", r.Name, j)
		}
		names[r.Name] = i
		if r.Upstream == "" {
			v.errf(p+".upstream", "missing")
		} else if _, ok := c.Upstreams[r.Upstream]; !ok {
			have := strings.Join(c.Names(), ", ")
			if have == "" {
				have = "none"
			}
			v.errf(p+".upstream", "no upstream named %q (have %s)", r.Upstream, have)
		}
		if !strings.HasPrefix(r.PathPrefix, "/") {
			v.errf(p+".path_prefix", "%q must start with /", r.PathPrefix)
		}
		if strings.ContainsAny(r.Host, "/: ") {
			v.errf(p+".host", "%q must be a host name without scheme or port", r.Host)
		}
		if r.Realtime != nil && !strings.HasPrefix(r.Realtime.Path, "/") {
			v.errf(p+".realtime.path", "%q must be a path starting with /", r.Realtime.Path)
		}
		if r.Cache != nil && r.Cache.MaxObjectBytes > c.Cache.Memory.MaxBytes/4 {
			v.errf(p+".cache.max_object_bytes", "%d is more than a quarter of cache.memory.max_bytes (%d)", r.Cache.MaxObjectBytes, c.Cache.Memory.MaxBytes)
		}
		if r.CDN != nil {
			for j, s := range r.CDN.PullSources {
				if _, err := parsePrefix(s); err != nil {
					v.errf(fmt.Sprintf("%s.cdn.pull_sources.%d", p, j), "%q is not an address or CIDR", s)
				}
			}
			if _, err := cdn.New(r.CDNConfig()); err != nil {
				v.errf(p+".cdn", "%v", err)
			}
		}
	}
}

func checkListen(v *validator, field, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errf(field, "%q is not host:port", addr)
		return
	}
	_ = host
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.errf(field, "%q has no valid port", addr)
	}
}

func (c *Config) validateUpstream(v *validator, name string) {
	p := "upstreams." + name
	u := c.Upstreams[name]
	if u == nil {
		v.errf(p, "empty upstream: give it backends")
		return
	}
	if algs := balancer.Algorithms(); !slices.Contains(algs, u.Algorithm) {
		v.errf(p+".algorithm", "unknown algorithm %q (want one of %s)", u.Algorithm, strings.Join(algs, ", "))
	}
	seen := map[string]int{}
	for i, b := range u.Backends {
		bp := fmt.Sprintf("%s.backends.%d", p, i)
		pu, err := url.Parse(b.URL)
		switch {
		case b.URL == "":
			v.errf(bp+".url", "missing")
		case err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "":
			v.errf(bp+".url", "%q is not an http:// or https:// URL with a host", b.URL)
		case pu.Path != "" && pu.Path != "/" || pu.RawQuery != "" || pu.User != nil:
			v.errf(bp+".url", "%q: only scheme, host and port are used; remove the path, query or user info", b.URL)
		default:
			key := pu.Host
			if j, dup := seen[key]; dup {
				v.errf(bp+".url", "%q duplicates backend %d", b.URL, j)
			}
			seen[key] = i
		}
		if b.Weight < 1 || b.Weight > 1000 {
			v.errf(bp+".weight", "%d is out of range 1..1000", b.Weight)
		}
	}
	h := u.Health
	if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
		v.errf(p+".health.path", "%q must start with /", h.Path)
	}
	if !slices.Contains([]string{"GET", "HEAD", "OPTIONS", "POST"}, h.Method) {
		v.errf(p+".health.method", "unsupported method %q (want GET, HEAD, OPTIONS or POST)", h.Method)
	}
	if h.Timeout > h.Interval {
		v.errf(p+".health.timeout", "%s is longer than the interval %s", h.Timeout.Std(), h.Interval.Std())
	}
	if h.Interval.Std() < 10*time.Millisecond {
		v.errf(p+".health.interval", "%s is too short (at least 10ms)", h.Interval.Std())
	}
	if _, _, err := h.StatusRange(); err != nil {
		v.errf(p+".health.expect_status", "%v", err)
	}
	if h.UnhealthyAfter < 1 {
		v.errf(p+".health.unhealthy_after", "must be at least 1")
	}
	if h.HealthyAfter < 1 {
		v.errf(p+".health.healthy_after", "must be at least 1")
	}
	if u.Passive.MaxEjectedPercent < 0 || u.Passive.MaxEjectedPercent > 100 {
		v.errf(p+".passive.max_ejected_percent", "%d is out of range 0..100", u.Passive.MaxEjectedPercent)
	}
	if u.Passive.Failures < 1 {
		v.errf(p+".passive.failures", "must be at least 1")
	}
	if u.Retries.Max < -1 || u.Retries.Max > 10 {
		v.errf(p+".retries.max", "%d is out of range -1..10", u.Retries.Max)
	}
	if u.Retries.BudgetPercent < 0 || u.Retries.BudgetPercent > 100 {
		v.errf(p+".retries.budget_percent", "%d is out of range 0..100", u.Retries.BudgetPercent)
	}
	if a := u.Autoscale; a != nil {
		ap := p + ".autoscale"
		if a.Provider == "" {
			a.Provider = "process"
		}
		switch a.Provider {
		case "process":
			if len(a.Command) == 0 || a.Command[0] == "" {
				v.errf(ap+".command", "missing: the program (and arguments) that runs one instance")
			}
		case "kubernetes":
			if a.Kubernetes.Deployment == "" {
				v.errf(ap+".kubernetes.deployment", "missing: the Deployment to scale")
			}
			if s := a.Kubernetes.Scheme; s != "" && s != "http" && s != "https" {
				v.errf(ap+".kubernetes.scheme", "%q is not http or https", s)
			}
		default:
			v.errf(ap+".provider", "unknown provider %q (want process or kubernetes)", a.Provider)
		}
		if a.Metric != "" && !slices.Contains([]string{"inflight", "rps", "latency_p95", "cpu"}, a.Metric) {
			v.errf(ap+".metric", "unknown metric %q (want inflight, rps, latency_p95 or cpu)", a.Metric)
		}
		if a.Min < 0 || a.Max < 0 || (a.Max > 0 && a.Min > a.Max) {
			v.errf(ap+".min", "min %d and max %d: want 0 ≤ min ≤ max", a.Min, a.Max)
		}
		if a.Target < 0 {
			v.errf(ap+".target", "must not be negative")
		}
		if a.Tolerance < 0 || a.Tolerance >= 1 {
			v.errf(ap+".tolerance", "%v is out of range [0, 1)", a.Tolerance)
		}
	}
	for k := range u.RequestHeaders {
		if k == "" || strings.ContainsAny(k, " :\r\n\t") || strings.EqualFold(k, "Host") || strings.EqualFold(k, "Connection") {
			v.errf(p+".request_headers."+k, "%q cannot be set: not a header name, or Host/Connection", k)
		}
	}
	for k, val := range u.RequestHeaders {
		if strings.ContainsAny(val, "\r\n") {
			v.errf(p+".request_headers."+k, "value contains a line break")
		}
	}
	if u.MaxConnsPerBackend < 1 {
		v.errf(p+".max_conns_per_backend", "must be at least 1")
	}
}

// StatusRange parses ExpectStatus: "200-399" or a single code "204".
func (h Health) StatusRange() (lo, hi int, err error) {
	s := strings.TrimSpace(h.ExpectStatus)
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("%q is not a status or range such as 200-399", h.ExpectStatus)
	}
	return lo, hi, nil
}

// CDNConfig translates the route's cdn block for the cdn package.
func (r Route) CDNConfig() cdn.Config {
	c := r.CDN
	if c == nil {
		return cdn.Config{}
	}
	var sources []netip.Prefix
	for _, s := range c.PullSources {
		if p, err := parsePrefix(s); err == nil {
			sources = append(sources, p)
		}
	}
	return cdn.Config{
		Route:             r.Name,
		Host:              c.Host,
		Origins:           c.Origins,
		Patterns:          c.Patterns,
		Fingerprint:       c.Fingerprint,
		AssetCacheControl: c.CacheControl,
		CDNHeader:         c.PullHeader,
		CDNSources:        sources,
	}
}

func (c *Config) hasRealtimeRoute() bool {
	for _, r := range c.Routes {
		if r.Realtime != nil {
			return true
		}
	}
	return false
}
