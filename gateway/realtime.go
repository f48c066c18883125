package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/scaleout/scaleout/config"
	"github.com/scaleout/scaleout/realtime"
)

// errRealtimeRestart is returned by a reload that adds the first realtime
// route: the hub and its broker are built at start.
var errRealtimeRestart = errors.New("the first realtime route takes effect on restart")

func wantsRealtime(cfg *config.Config) bool {
	for _, r := range cfg.Routes {
		if r.Realtime != nil {
			return true
		}
	}
	return false
}

// openHub builds the WebSocket hub and its broker when a route serves
// WebSockets.
func (g *Gateway) openHub(cfg *config.Config) error {
	if !wantsRealtime(cfg) {
		return nil
	}
	rc := cfg.Realtime
	hc := realtime.Config{
		Secret:            []byte(rc.Secret),
		AllowAnonymous:    rc.AllowAnonymous,
		AnonymousChannels: rc.AnonymousChannels,
		HistorySize:       rc.HistorySize,
		HistoryTTL:        rc.HistoryTTL.Std(),
		SendQueue:         rc.SendQueue,
		PingInterval:      rc.PingInterval.Std(),
		PongTimeout:       rc.PongTimeout.Std(),
		PresenceTTL:       rc.PresenceTTL.Std(),
		// proxy.NewServer sets KeepHijackedConns.
		ServerKeepsHijackedConns: true,
		Logger:                   g.log,
	}
	var rdb redis.UniversalClient
	if rc.RedisURL != "" {
		opt, err := redis.ParseURL(rc.RedisURL)
		if err != nil {
			return fmt.Errorf("realtime.redis_url: %w", err)
		}
		// A publish runs a script that assigns the next sequence number: a
		// retry after a timeout could publish twice, so there is none, and
		// a stalled Redis is given up on quickly (the node then delivers
		// locally and says so).
		opt.MaxRetries = -1
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = time.Second, time.Second, time.Second
		rdb = redis.NewClient(opt)
		hc.Presence = rdb
		g.closers = append(g.closers, rdb.Close)
	}
	switch rc.Broker {
	case "redis":
		hc.Broker = realtime.NewRedisBroker(rdb, realtime.RedisBrokerConfig{})
	case "nats":
		nc, err := nats.Connect(rc.NATSURL, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true))
		if err != nil {
			return fmt.Errorf("realtime: connecting to nats at %s: %w", rc.NATSURL, err)
		}
		g.closers = append(g.closers, func() error { nc.Close(); return nil })
		hc.Broker = realtime.NewNATSBroker(nc, realtime.NATSBrokerConfig{History: rdb})
	}
	hub, err := realtime.NewHub(hc)
	if err != nil {
		return fmt.Errorf("realtime: %w", err)
	}
	if err := g.reg.Register(hub.Collector()); err != nil {
		return fmt.Errorf("registering realtime metrics: %w", err)
	}
	g.hub = hub
	return nil
}

// runHub runs the hub until ctx is done.
func (g *Gateway) runHub(ctx context.Context) {
	if g.hub == nil {
		return
	}
	g.hubDone = make(chan struct{})
	go func() {
		defer close(g.hubDone)
		if err := g.hub.Run(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("realtime hub stopped", "err", err)
		}
	}()
}

// drainHub closes this node's WebSockets with a "reconnect" close code,
// so that clients move to another node.
func (g *Gateway) drainHub(ctx context.Context) {
	if g.hub != nil {
		g.hub.Drain(ctx)
	}
}

func (g *Gateway) apiPublish() http.HandlerFunc {
	if g.hub == nil {
		return func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "no route serves realtime")
		}
	}
	return g.hub.PublishHandler().ServeHTTP
}
