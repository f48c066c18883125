package proxy

import (
	"log/slog"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkProxy measures a GET through the proxy to a fasthttp backend
// over loopback, client and backend included (all in this process, so
// allocs/op counts all three; fasthttp's client and server allocate
// nothing per request in the steady state).
//
// Sub-benchmarks give the baselines on the same machine at the same time:
// direct (client to backend) and minimal (a bare fasthttp proxy: HostClient.Do
// on the server's own request and response, no headers, retries or
// streaming).
func BenchmarkProxy(b *testing.B) {
	body := []byte("hello, world")
	be := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain")
		ctx.SetBody(body)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go be.Serve(ln)     //nolint:errcheck
	defer be.Shutdown() //nolint:errcheck

	beAddr := ln.Addr().String()

	pool := testPool(b, "http://"+beAddr)
	p := New(Config{Logger: slog.New(slog.DiscardHandler)})
	proxyAddr := startProxy(b, p, pool, ServerConfig{})

	minimal := &fasthttp.HostClient{Addr: beAddr, MaxConns: 512}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	msrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if err := minimal.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error(err.Error(), 502)
		}
	}}
	go msrv.Serve(mln)    //nolint:errcheck
	defer msrv.Shutdown() //nolint:errcheck

	b.Run("direct", func(b *testing.B) { benchGET(b, beAddr, body) })
	b.Run("minimal", func(b *testing.B) { benchGET(b, mln.Addr().String(), body) })
	b.Run("proxy", func(b *testing.B) { benchGET(b, proxyAddr, body) })
}

func benchGET(b *testing.B, addr string, body []byte) {
	client := &fasthttp.HostClient{Addr: addr, MaxConns: 64}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + addr + "/bench?x=1")
		for pb.Next() {
			if err := client.Do(req, resp); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != 200 || len(resp.Body()) != len(body) {
				b.Fatalf("status %d body %q", resp.StatusCode(), resp.Body())
			}
		}
	})
}
