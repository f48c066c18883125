package realtime

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
)

// runNodeProcess runs one node in this process, configured by environment
// variables, prints "READY ws-url admin-url" and serves until its standard
// input closes (the test ended) or it is killed:
//
//	RT_BROKER        redis (default) or nats
//	RT_REDIS         Redis address (default 127.0.0.1:6379)
//	RT_PREFIX        key prefix
//	RT_NODE          node id
//	RT_PRESENCE_TTL  presence TTL (default 15s)
func runNodeProcess() error {
	redisAddr := envOr("RT_REDIS", "127.0.0.1:6379")
	prefix := envOr("RT_PREFIX", "scaleout:rt:test")
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	var broker Broker
	switch envOr("RT_BROKER", "redis") {
	case "redis":
		broker = NewRedisBroker(rdb, RedisBrokerConfig{Prefix: prefix})
	case "nats":
		nc, err := nats.Connect("nats://127.0.0.1:4222", nats.MaxReconnects(-1))
		if err != nil {
			return err
		}
		defer nc.Close()
		broker = NewNATSBroker(nc, NATSBrokerConfig{Subject: prefix + ".pub", History: rdb, HistoryPrefix: prefix})
	default:
		return fmt.Errorf("unknown RT_BROKER")
	}
	ttl, err := time.ParseDuration(envOr("RT_PRESENCE_TTL", "15s"))
	if err != nil {
		return err
	}
	h, err := NewHub(Config{
		Broker: broker, Presence: rdb, PresenceTTL: ttl, PresencePrefix: prefix,
		Secret: testSecret, NodeID: os.Getenv("RT_NODE"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	go func() { _ = h.Run(ctx) }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &fasthttp.Server{Handler: h.ServeFastHTTP}
	go func() { _ = srv.Serve(ln) }()
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("POST /api/publish", h.PublishHandler())
	go func() { _ = http.Serve(aln, mux) }()
	for !h.Status().BrokerUp {
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Printf("READY ws://%s/ws http://%s\n", ln.Addr(), aln.Addr())
	<-ctx.Done()
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	h.Drain(dctx)
	dcancel()
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
