package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// serveStatic is the origin: it answers every path with the page (read once
// into memory) as text/html with its Content-Length, so that what the
// measurements compare is the gateway, not the disk.
func serveStatic(listen, path string) error {
	page, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the page: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/html; charset=utf-8")
			ctx.SetBody(page)
		},
		Name:        "cdn-bench-origin",
		ReadTimeout: 60 * time.Second,
		IdleTimeout: 120 * time.Second,
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Shutdown()
	}()
	if err := srv.Serve(ln); err != nil {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}
