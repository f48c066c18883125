// Command minproxy is the smallest useful fasthttp reverse proxy: the
// server's own request and response handed to a HostClient, round-robin over
// the backends, keep-alive to them, nothing else (no hop-by-hop or
// X-Forwarded-* headers, retries, limits, metrics or streaming). In
// `bench/run lb` it is the ceiling for scaleout on the same stack: the gap
// between the two is the gateway's own work.
//
//	minproxy -listen 127.0.0.1:8080 -backend 127.0.0.1:9001 -backend 127.0.0.1:9002
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

type backends []string

func (b *backends) String() string     { return strings.Join(*b, ",") }
func (b *backends) Set(v string) error { *b = append(*b, v); return nil }

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	var bs backends
	flag.Var(&bs, "backend", "backend host:port (repeat)")
	flag.Parse()
	if len(bs) == 0 {
		fmt.Fprintln(os.Stderr, "minproxy: at least one -backend")
		os.Exit(2)
	}
	clients := make([]*fasthttp.HostClient, len(bs))
	for i, b := range bs {
		clients[i] = &fasthttp.HostClient{Addr: b, MaxConns: 512, MaxIdleConnDuration: 90 * time.Second}
	}
	var next atomic.Uint64
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			c := clients[next.Add(1)%uint64(len(clients))]
			if err := c.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error("bad gateway", fasthttp.StatusBadGateway)
			}
		},
		ReadTimeout: 60 * time.Second,
		IdleTimeout: 60 * time.Second,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "minproxy: %v\n", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Shutdown()
	}()
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintf(os.Stderr, "minproxy: %v\n", err)
		os.Exit(1)
	}
}
