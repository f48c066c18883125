package proxy

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzPrepareRequest feeds arbitrary header blocks through the request
// rewriting: whatever the client sends, the backend must get the gateway's
// own forwarding fields and a sane request ID, and no hop-by-hop field.
func FuzzPrepareRequest(f *testing.F) {
	f.Add("Connection: X-Forwarded-For, keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\n", true)
	f.Add("Connection: close\r\nX-Request-Id: ok-1\r\nKeep-Alive: 5\r\n", false)
	f.Add("Connection: ,,, X-A ,\r\nX-A: 1\r\nX-Forwarded-For: garbage, 10.0.0.1\r\n", true)
	f.Add("Connection: Content-Length, Host\r\nContent-Length: 0\r\n", false)
	f.Add("X-Forwarded-For: ::1, 2001:db8::2, 1.1.1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n", true)
	f.Fuzz(func(t *testing.T, headers string, trusted bool) {
		raw := "GET /p HTTP/1.1\r\nHost: app.test\r\n" + headers + "\r\n"
		var req fasthttp.Request
		if err := req.Header.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return
		}
		cfg := Config{}
		if trusted {
			cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
		}
		p := New(cfg)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}, nil)
		if a := p.ClientAddr(&ctx); !a.IsValid() {
			t.Fatalf("ClientAddr returned an invalid address for %q", headers)
		}
		if ambiguousFraming(&ctx.Request.Header) {
			return // refused with 400 by Serve
		}
		x := p.acquireExchange()
		p.prepareRequest(&ctx, x, false)
		h := &ctx.Request.Header
		xff := string(h.Peek("X-Forwarded-For"))
		if !strings.HasSuffix(xff, "127.0.0.1") || (!trusted && xff != "127.0.0.1") {
			t.Fatalf("X-Forwarded-For %q from %q", xff, headers)
		}
		if !saneRequestID(h.Peek("X-Request-Id")) {
			t.Fatalf("X-Request-Id %q", h.Peek("X-Request-Id"))
		}
		for _, k := range []string{"Connection", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization", "Proxy-Connection"} {
			if v := h.Peek(k); len(v) > 0 {
				t.Fatalf("%s: %q left in from %q", k, v, headers)
			}
		}
		if len(h.Peek("X-Forwarded-Proto")) == 0 || string(h.Host()) != "app.test" {
			t.Fatalf("forwarding fields lost: %q", h.Header())
		}
	})
}
