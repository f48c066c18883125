package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scaleout/scaleout/cache"
	"github.com/scaleout/scaleout/config"
	"github.com/scaleout/scaleout/httpcache"
)

// openHTTPCache builds the HTTP cache's layers when a route caches. The
// Redis layer is optional; an unreachable Redis is not fatal (the cache
// runs on memory and reconnects by itself).
func (g *Gateway) openHTTPCache(cfg *config.Config) error {
	need := false
	for _, r := range cfg.Routes {
		need = need || (r.Cache != nil && r.Cache.Enabled)
	}
	if g.httpCache.Load() != nil || (!need && cfg.Cache.Redis.URL == "") {
		return nil
	}
	cc := cache.Config{
		Name:           "http",
		MemoryMaxBytes: int64(cfg.Cache.Memory.MaxBytes),
		Prefix:         cfg.Cache.Redis.Prefix,
		DefaultTTL:     time.Minute,
		Logger:         g.log,
	}
	if u := cfg.Cache.Redis.URL; u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			return fmt.Errorf("cache.redis.url: %w", err)
		}
		// Short timeouts: a slow Redis must fall back to memory quickly.
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = 250*time.Millisecond, 250*time.Millisecond, 250*time.Millisecond
		cc.Redis = redis.NewClient(opt)
	}
	c, err := cache.New(context.Background(), cc)
	if err != nil {
		return fmt.Errorf("opening the http cache: %w", err)
	}
	g.caches = append(g.caches, c)
	hc := newHTTPCache(httpcache.NewStore(c, nil))
	if err := g.reg.Register(c.Collector()); err != nil {
		return fmt.Errorf("registering cache metrics: %w", err)
	}
	if err := g.reg.Register(hc.results); err != nil {
		return fmt.Errorf("registering cache metrics: %w", err)
	}
	g.httpCache.Store(hc)
	return nil
}
