package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/valyala/fasthttp"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/scaleout/scaleout/autoscale"
	"github.com/scaleout/scaleout/balancer"
	"github.com/scaleout/scaleout/cache"
	"github.com/scaleout/scaleout/cdn"
	"github.com/scaleout/scaleout/config"
	"github.com/scaleout/scaleout/proxy"
	"github.com/scaleout/scaleout/realtime"
)

// Options are the parts of a Gateway that do not come from the file.
type Options struct {
	// Logger receives the gateway's logs. Default slog.Default().
	Logger *slog.Logger
	// Registry receives the gateway's metrics. Default: a new registry
	// with the Go and process collectors.
	Registry *prometheus.Registry
	// KubeClient is the Kubernetes API client of autoscalers with the
	// kubernetes provider. Default: built from the upstream's kubeconfig,
	// or the in-cluster service account.
	KubeClient k8s.Interface
}

// Gateway is a running (or ready to run) scaleout gateway.
type Gateway struct {
	opt     Options
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *gatewayMetrics

	mu     sync.Mutex // serialises Reload and admin mutations
	cfg    *config.Config
	ups    map[string]*upstream
	router atomic.Pointer[router]
	// rewriters are the CDN rewriters by route name; they survive reloads
	// that leave their route's cdn block alone, and so do their counters.
	rewriters    map[string]*cdnRoute
	rewriterKeys map[string]string
	cdnStats     *cdn.Collector
	// httpCache is nil until a route caches.
	httpCache atomic.Pointer[httpCache]
	caches    []*cache.Cache  // closed when Run ends
	runCtx    context.Context // set by Run: pools started later run under it

	hub     *realtime.Hub  // nil when no route serves WebSockets
	hubDone chan struct{}  // closed when the hub's Run returns
	closers []func() error // clients to close when Run ends

	latencies   autoscale.Latencies // fed for upstreams scaled on latency_p95
	controllers sync.WaitGroup      // autoscalers running

	tlsCert *tls.Certificate
	server  *fasthttp.Server
	admin   *http.Server
	ready   chan struct{} // closed when both listeners are bound
	addrs   struct{ data, admin net.Addr }
}

// New builds a gateway from cfg without binding any port.
func New(cfg *config.Config, opt Options) (*Gateway, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Registry == nil {
		opt.Registry = prometheus.NewRegistry()
		opt.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	g := &Gateway{
		opt:   opt,
		log:   opt.Logger,
		reg:   opt.Registry,
		cfg:   cfg,
		ups:   map[string]*upstream{},
		ready: make(chan struct{}),
	}
	if cfg.TLS.Cert != "" {
		// Loaded here, so that bad files stop the gateway before it binds.
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		g.tlsCert = &cert
	}
	for _, name := range cfg.Names() {
		u, err := g.newUpstream(name, cfg.Upstreams[name], cfg)
		if err != nil {
			return nil, err
		}
		if a := cfg.Upstreams[name].Autoscale; a != nil {
			if err := g.newController(u, a); err != nil {
				return nil, err
			}
		}
		g.ups[name] = u
	}
	if err := g.openHTTPCache(cfg); err != nil {
		return nil, err
	}
	if err := g.openHub(cfg); err != nil {
		return nil, err
	}
	g.cdnStats = cdn.NewCollector()
	rws, err := g.rewritersFor(cfg)
	if err != nil {
		return nil, err
	}
	g.installRewriters(cfg, rws)
	g.router.Store(newRouter(cfg.Routes, g.ups, rws))
	g.metrics = newGatewayMetrics()
	for _, c := range []prometheus.Collector{g.metrics, balancer.NewCollector(g.pools), proxyCollector{g}, g.cdnStats, autoscale.NewCollector(g.controllersList)} {
		if err := g.reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	g.server = proxy.NewServer(proxy.ServerConfig{
		ReadHeaderTimeout:   cfg.Server.ReadHeaderTimeout.Std(),
		BodyReadTimeout:     cfg.Server.BodyReadTimeout.Std(),
		MaxRequestBodyBytes: int64(cfg.Server.MaxBodyBytes),
		IdleTimeout:         cfg.Server.IdleTimeout.Std(),
		MaxHeaderBytes:      int(cfg.Server.MaxHeaderBytes),
	}, g.handle, g.log)
	g.admin = &http.Server{Handler: g.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	return g, nil
}

// upstream is a named pool with its proxy; it outlives reloads while its
// name stays in the file.
type upstream struct {
	name    string
	cfg     config.Upstream
	pool    *balancer.Pool
	proxy   *proxy.Proxy
	cancel  context.CancelFunc // stops the pool's health checks
	dynamic map[string]int     // backends added through the admin API: id → weight

	ctl       *autoscale.Controller // nil without autoscale
	ctlCancel context.CancelFunc
	ctlCmd    []string
}

func balancerConfig(u *config.Upstream, log *slog.Logger) balancer.Config {
	lo, hi, _ := u.Health.StatusRange()
	return balancer.Config{
		Algorithm: u.Algorithm,
		Health: balancer.HealthConfig{
			Path:           u.Health.Path,
			Method:         u.Health.Method,
			Interval:       u.Health.Interval.Std(),
			Timeout:        u.Health.Timeout.Std(),
			StatusMin:      lo,
			StatusMax:      hi,
			UnhealthyAfter: u.Health.UnhealthyAfter,
			HealthyAfter:   u.Health.HealthyAfter,
		},
		Passive: balancer.PassiveConfig{
			Disabled:          !*u.Passive.Enabled,
			Failures:          u.Passive.Failures,
			EjectFor:          u.Passive.EjectFor.Std(),
			MaxEjectFor:       u.Passive.MaxEjectFor.Std(),
			MaxEjectedPercent: u.Passive.MaxEjectedPercent,
		},
		DrainTimeout: u.DrainTimeout.Std(),
		Logger:       log,
	}
}

func proxyConfig(u *config.Upstream, c *config.Config, log *slog.Logger) proxy.Config {
	pc := proxy.Config{
		DialTimeout:           u.Timeouts.Dial.Std(),
		ResponseHeaderTimeout: u.Timeouts.ResponseHeader.Std(),
		IdleConnTimeout:       u.Timeouts.Idle.Std(),
		MaxConnsPerBackend:    u.MaxConnsPerBackend,
		BufferResponseBytes:   bufferFor(u, c),
		MaxRequestBodyBytes:   int64(c.Server.MaxBodyBytes),
		TrustedProxies:        c.TrustedPrefixes(),
		Retries:               proxy.RetryConfig{Max: u.Retries.Max, BudgetPercent: u.Retries.BudgetPercent}, // -1 disables
		Logger:                log,
	}
	if c.Log.Access {
		pc.AccessLog = log.With("log", "access")
	}
	return pc
}

// bufferFor is how large a response with a Content-Length the proxy
// buffers whole instead of streaming: at least 64 KiB, and as large as the
// largest object a cached route to this upstream may store, so that the
// cache sees the whole body.
func bufferFor(u *config.Upstream, c *config.Config) int {
	n := 64 << 10
	for _, r := range c.Routes {
		if r.Cache != nil && r.Cache.Enabled && c.Upstreams[r.Upstream] == u {
			n = max(n, int(r.Cache.MaxObjectBytes))
		}
	}
	return n
}

func newProxyFor(u *config.Upstream, c *config.Config, log *slog.Logger) *proxy.Proxy {
	return proxy.New(proxyConfig(u, c, log))
}

func backendsOf(u *config.Upstream) ([]*balancer.Backend, error) {
	var out []*balancer.Backend
	for _, b := range u.Backends {
		be, err := balancer.NewBackend(b.URL, b.Weight)
		if err != nil {
			return nil, err
		}
		out = append(out, be)
	}
	return out, nil
}

func (g *Gateway) newUpstream(name string, u *config.Upstream, c *config.Config) (*upstream, error) {
	bs, err := backendsOf(u)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", name, err)
	}
	pool, err := balancer.New(name, balancerConfig(u, g.log), bs)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", name, err)
	}
	return &upstream{
		name:    name,
		cfg:     *u,
		pool:    pool,
		proxy:   newProxyFor(u, c, g.log),
		dynamic: map[string]int{},
	}, nil
}

func (g *Gateway) pools() []*balancer.Pool {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*balancer.Pool, 0, len(g.ups))
	for _, u := range g.ups {
		out = append(out, u.pool)
	}
	return out
}

// handle is the data plane's request handler.
func (g *Gateway) handle(ctx *fasthttp.RequestCtx) {
	if m := ctx.Method(); string(m) == fasthttp.MethodConnect || string(m) == fasthttp.MethodTrace {
		// A reverse proxy tunnels nothing, and TRACE would echo headers
		// (cookies, tokens) back to scripts.
		ctx.Response.Header.Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		ctx.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
		return
	}
	rt := g.router.Load().match(ctx.Host(), ctx.Path())
	if rt != nil && rt.realtimePath != "" && string(ctx.Path()) == rt.realtimePath && g.hub != nil {
		g.hub.ServeFastHTTP(ctx)
		return
	}
	if rt == nil {
		ctx.Response.Header.Set("Content-Type", "text/plain; charset=utf-8")
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		ctx.SetBodyString("no route for this host and path\n")
		return
	}
	if rt.cache != nil {
		if hc := g.httpCache.Load(); hc != nil {
			g.serveCached(ctx, rt, hc)
			return
		}
	}
	g.serveOrigin(ctx, rt, nil)
}

// serveOrigin sends a request to its route's upstream, through the CDN
// rewriter when the route has one.
// A non-nil outer filter sees streamed bodies after the CDN rewriting.
func (g *Gateway) serveOrigin(ctx *fasthttp.RequestCtx, rt *route, outer proxy.BodyFilter) {
	for _, kv := range rt.setHeaders {
		ctx.Request.Header.Set(kv[0], kv[1])
	}
	if rt.observeLatency {
		start := time.Now()
		defer func() { g.latencies.Observe(rt.upstream.name, time.Since(start)) }()
	}
	if rt.cdn != nil {
		g.serveCDN(ctx, rt, outer)
		return
	}
	rt.upstream.proxy.ServeFiltered(ctx, rt.upstream.name, rt.upstream.pool, outer)
}

// rewritersFor builds the CDN rewriters of cfg's routes, reusing the
// running ones whose configuration is unchanged. Callers hold g.mu or own g.
func (g *Gateway) rewritersFor(cfg *config.Config) (map[string]*cdnRoute, error) {
	out := map[string]*cdnRoute{}
	for _, r := range cfg.Routes {
		if r.CDN == nil {
			continue
		}
		key := fmt.Sprintf("%+v", *r.CDN)
		if old := g.rewriters[r.Name]; old != nil && g.rewriterKeys[r.Name] == key {
			out[r.Name] = old
			continue
		}
		cc := r.CDNConfig()
		cr := &cdnRoute{}
		if cc.Fingerprint {
			// Versions are learnt from the ETags of the assets this gateway
			// serves as the CDN's origin (see serveCDN).
			cr.versions = &liveVersions{}
			cc.Versioner = cr.versions
		}
		rw, err := cdn.New(cc)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", r.Name, err)
		}
		cr.rw = rw
		out[r.Name] = cr
	}
	return out, nil
}

// installRewriters makes rws the running set. Callers hold g.mu or own g.
func (g *Gateway) installRewriters(cfg *config.Config, rws map[string]*cdnRoute) {
	for name := range g.rewriters {
		if rws[name] == nil {
			g.cdnStats.Remove(name)
		}
	}
	g.rewriterKeys = map[string]string{}
	for _, r := range cfg.Routes {
		if cr := rws[r.Name]; cr != nil {
			g.cdnStats.Set(cr.rw)
			g.rewriterKeys[r.Name] = fmt.Sprintf("%+v", *r.CDN)
		}
	}
	g.rewriters = rws
}

// Addrs reports the bound data-plane and admin addresses once Run has
// bound them (nil before).
func (g *Gateway) Addrs() (data, admin net.Addr) {
	select {
	case <-g.ready:
		return g.addrs.data, g.addrs.admin
	default:
		return nil, nil
	}
}

// Ready is closed when both listeners are bound.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Run binds the listeners, starts health checks and serves until ctx is
// done; then it stops accepting, lets in-flight requests finish within the
// grace period and returns nil. Binding errors are returned at once.
func (g *Gateway) Run(ctx context.Context) error {
	g.mu.Lock()
	cfg := g.cfg
	g.mu.Unlock()
	dl, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	al, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		dl.Close()
		return fmt.Errorf("admin listening on %s: %w", cfg.Admin.Listen, err)
	}
	if g.tlsCert != nil {
		dl = tls.NewListener(dl, &tls.Config{Certificates: []tls.Certificate{*g.tlsCert}, MinVersion: tls.VersionTLS12})
	}
	g.addrs.data, g.addrs.admin = dl.Addr(), al.Addr()

	runCtx, stopPools := context.WithCancel(context.Background())
	defer stopPools()
	g.mu.Lock()
	g.runCtx = runCtx
	for _, u := range g.ups {
		g.startPool(u)
		g.startController(u)
	}
	g.mu.Unlock()
	g.runHub(runCtx)
	close(g.ready)
	g.log.Info("gateway listening", "listen", dl.Addr().String(), "admin", al.Addr().String())

	errc := make(chan error, 2)
	go func() { errc <- g.server.Serve(dl) }()
	go func() {
		if err := g.admin.Serve(al); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		runErr = fmt.Errorf("serving: %w", runErr)
	}
	g.log.Info("gateway stopping", "grace", cfg.Server.GracePeriod.Std().String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.GracePeriod.Std())
	defer cancel()
	g.drainHub(sctx)
	if err := g.server.ShutdownWithContext(sctx); err != nil {
		g.log.Warn("in-flight requests cut at the end of the grace period", "err", err)
	}
	_ = g.admin.Shutdown(sctx)
	// Relayed WebSockets are not tracked by the server: give them what is
	// left of the grace period to finish before their connections close.
	g.waitWebSockets(sctx)
	// Autoscalers stop their instances on the way out; wait for them, so
	// that no child outlives the gateway.
	stopPools()
	g.controllers.Wait()
	g.mu.Lock()
	for _, u := range g.ups {
		u.proxy.Close()
	}
	g.mu.Unlock()
	for _, c := range g.caches {
		_ = c.Close()
	}
	if g.hubDone != nil {
		<-g.hubDone
	}
	for _, c := range g.closers {
		_ = c()
	}
	return runErr
}

// startPool runs a pool's health checks under the gateway's run context.
// Callers hold g.mu.
func (g *Gateway) startPool(u *upstream) {
	if g.runCtx == nil || u.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(g.runCtx)
	u.cancel = cancel
	go u.pool.Run(ctx)
}

// waitWebSockets waits until no WebSocket is relayed, or ctx is done.
func (g *Gateway) waitWebSockets(ctx context.Context) {
	for {
		n := 0
		g.mu.Lock()
		for _, u := range g.ups {
			n += u.proxy.WebSockets()
		}
		g.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			g.log.Warn("WebSockets cut at the end of the grace period", "open", n)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
