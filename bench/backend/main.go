// Command backend is the fixed HTTP server that every contender of the
// side-by-side benchmarks forwards to: it answers every request with the same
// small body, as fast as fasthttp allows, so that what differs between runs
// is the proxy in front of it.
//
//	backend -listen 127.0.0.1:9001 -body 128
//
// GET /health answers "ok"; every other request gets -body bytes of text.
// It stops on SIGINT or SIGTERM.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "address to listen on (loopback)")
	size := flag.Int("body", 128, "response body size in bytes")
	flag.Parse()
	if err := run(*listen, *size); err != nil {
		fmt.Fprintf(os.Stderr, "backend: %v\n", err)
		os.Exit(1)
	}
}

func run(listen string, size int) error {
	if size < 0 || size > 16<<20 {
		return fmt.Errorf("-body %d: want 0..16777216", size)
	}
	body := bytes.Repeat([]byte("x"), size)
	if size > 0 {
		body[size-1] = '\n'
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == "/health" {
				ctx.SetBodyString("ok")
				return
			}
			ctx.SetContentType("text/plain")
			ctx.SetBody(body)
		},
		Name:               "bench-backend",
		ReadTimeout:        60 * time.Second,
		IdleTimeout:        120 * time.Second,
		MaxRequestBodySize: 1 << 20,
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Shutdown()
	}()
	fmt.Printf("backend listening on http://%s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}
