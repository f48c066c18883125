package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// serveBackend is the origin every cache in this benchmark fronts: every
// path answers the same cacheable body (Cache-Control: max-age=3600, an
// ETag and Last-Modified), and GET /__fetches (not cacheable) answers how
// many cacheable responses it has sent, so that the driver can check that
// the measured rounds were served by the caches.
func serveBackend(listen string, size int) error {
	if size < 1 || size > 1<<20 {
		return fmt.Errorf("-body %d: want 1..1048576", size)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
	body[size-1] = '\n'
	lastModified := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC1123)
	lastModified = lastModified[:len(lastModified)-3] + "GMT"
	var fetches atomic.Int64
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == "/__fetches" {
				ctx.Response.Header.Set("Cache-Control", "no-store")
				ctx.SetBodyString(strconv.FormatInt(fetches.Load(), 10))
				return
			}
			fetches.Add(1)
			ctx.SetContentType("text/plain; charset=utf-8")
			ctx.Response.Header.Set("Cache-Control", "max-age=3600")
			ctx.Response.Header.Set("ETag", `"bench-2k"`)
			ctx.Response.Header.Set("Last-Modified", lastModified)
			ctx.SetBody(body)
		},
		Name:        "cache-bench-origin",
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
