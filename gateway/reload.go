package gateway

import (
	"fmt"
	"time"

	"github.com/scaleout/scaleout/balancer"
	"github.com/scaleout/scaleout/config"
)

// Reload replaces the running configuration with cfg without dropping a
// request: routes are swapped atomically, pools are updated in place so
// that backends that stay keep their health state, counters and
// connections, new upstreams start, and removed ones drain. Backends added
// through the admin API survive a reload unless the file names them.
//
// listen, admin and server settings take effect only on restart; a change
// to them is logged and otherwise ignored. On error nothing is changed.
func (g *Gateway) Reload(cfg *config.Config) (err error) {
	defer func() { g.metrics.reload(err) }()
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.cfg
	if old.Listen != cfg.Listen || old.Admin != cfg.Admin || old.TLS != cfg.TLS || !sameServer(old.Server, cfg.Server) {
		g.log.Warn("listen, admin, tls and server settings change only on restart; keeping the running ones")
	}
	cfg.Listen, cfg.Admin, cfg.TLS, cfg.Server = old.Listen, old.Admin, old.TLS, old.Server
	if fmt.Sprint(old.Realtime) != fmt.Sprint(cfg.Realtime) || old.Cache != cfg.Cache {
		g.log.Warn("realtime and cache layer settings change only on restart; keeping the running ones")
	}
	cfg.Realtime, cfg.Cache = old.Realtime, old.Cache // built at start

	// Check everything first, so that a bad file changes nothing.
	type plan struct {
		u        *upstream // existing, or nil for a new one
		bcfg     balancer.Config
		backends []*balancer.Backend
	}
	plans := map[string]*plan{}
	for _, name := range cfg.Names() {
		uc := cfg.Upstreams[name]
		p := &plan{u: g.ups[name], bcfg: balancerConfig(uc, g.log)}
		bs, err := backendsOf(uc)
		if err != nil {
			return fmt.Errorf("reload: upstream %s: %w", name, err)
		}
		if p.u != nil {
			for id, w := range p.u.dynamic {
				if !hasID(bs, id) {
					b, err := balancer.NewBackend(p.u.urlOf(id), w)
					if err == nil {
						bs = append(bs, b)
					}
				}
			}
			// Instances an autoscaler added are its own, not the file's:
			// they stay (unless it is draining them already, which a
			// listing here would call off).
			if p.u.ctl != nil {
				for _, b := range p.u.pool.Backends() {
					if !hasFileBackend(&p.u.cfg, b.ID) && !hasID(bs, b.ID) && b.State() != balancer.Draining {
						if nb, err := balancer.NewBackend(b.URL.String(), b.CurrentWeight()); err == nil {
							bs = append(bs, nb)
						}
					}
				}
			}
		}
		if _, err := balancer.New(name, p.bcfg, nil); err != nil {
			return fmt.Errorf("reload: upstream %s: %w", name, err)
		}
		p.backends = bs
		plans[name] = p
	}

	if err := g.openHTTPCache(cfg); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if g.hub == nil && wantsRealtime(cfg) {
		return fmt.Errorf("reload: %w", errRealtimeRestart)
	}
	rws, err := g.rewritersFor(cfg)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}

	next := map[string]*upstream{}
	for name, p := range plans {
		uc := cfg.Upstreams[name]
		if p.u == nil {
			u, err := g.newUpstream(name, uc, cfg)
			if err != nil {
				return fmt.Errorf("reload: %w", err)
			}
			if uc.Autoscale != nil {
				if err := g.newController(u, uc.Autoscale); err != nil {
					return fmt.Errorf("reload: %w", err)
				}
			}
			g.startPool(u)
			g.startController(u)
			next[name] = u
			continue
		}
		u := p.u
		if err := u.pool.Update(p.bcfg, p.backends); err != nil {
			// Validated above; an error here is a bug, but never half-apply silently.
			return fmt.Errorf("reload: upstream %s: %w", name, err)
		}
		for id := range u.dynamic {
			if hasFileBackend(uc, id) {
				delete(u.dynamic, id) // the file owns it now
			}
		}
		if proxyKeyOf(&u.cfg, old) != proxyKeyOf(uc, cfg) {
			oldProxy := u.proxy
			u.proxy = newProxyFor(uc, cfg, g.log)
			time.AfterFunc(uc.Timeouts.ResponseHeader.Std()+time.Minute, oldProxy.Close)
		}
		u.cfg = *uc
		if err := g.reloadAutoscale(u, uc.Autoscale); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		next[name] = u
	}
	for name, u := range g.ups {
		if _, stays := next[name]; !stays {
			g.retire(u)
		}
	}
	g.ups = next
	g.installRewriters(cfg, rws)
	g.router.Store(newRouter(cfg.Routes, next, rws))
	g.cfg = cfg
	g.log.Info("configuration reloaded", "upstreams", len(next), "routes", len(cfg.Routes))
	return nil
}

// retire drains an upstream that left the file; its health checks and
// connections stop once its backends are gone.
func (g *Gateway) retire(u *upstream) {
	u.stopController()
	for _, b := range u.pool.Backends() {
		_ = u.pool.Remove(b.ID)
	}
	timeout := u.cfg.DrainTimeout.Std()
	go func() {
		deadline := time.Now().Add(timeout + time.Second)
		for len(u.pool.Backends()) > 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if u.cancel != nil {
			u.cancel()
		}
		u.proxy.Close()
	}()
}

func hasID(bs []*balancer.Backend, id string) bool {
	for _, b := range bs {
		if b.ID == id {
			return true
		}
	}
	return false
}

func hasFileBackend(uc *config.Upstream, id string) bool {
	for _, b := range uc.Backends {
		if u, err := balancer.ParseURL(b.URL); err == nil && u.Host == id {
			return true
		}
	}
	return false
}

// urlOf returns the URL of one of the pool's backends.
func (u *upstream) urlOf(id string) string {
	for _, b := range u.pool.Backends() {
		if b.ID == id {
			return b.URL.String()
		}
	}
	return "http://" + id
}

// proxyKey is what decides whether an upstream's proxy must be rebuilt.
type proxyKey struct {
	timeouts config.Timeouts
	retries  config.Retries
	maxConns int
	maxBody  config.ByteSize
	access   bool
	trusted  string
}

func proxyKeyOf(u *config.Upstream, c *config.Config) proxyKey {
	return proxyKey{u.Timeouts, u.Retries, u.MaxConnsPerBackend, c.Server.MaxBodyBytes, c.Log.Access, fmt.Sprint(c.Server.TrustedProxies)}
}

func sameServer(a, b config.Server) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}
