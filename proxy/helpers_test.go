package proxy

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scaleout/scaleout/balancer"
)

// testPool returns a round-robin pool named app over urls, without passive
// health checks, so that the proxy alone is tested.
func testPool(t testing.TB, urls ...string) *balancer.Pool {
	t.Helper()
	var bs []*balancer.Backend
	for _, u := range urls {
		b, err := balancer.NewBackend(u, 1)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	pool, err := balancer.New("app", balancer.Config{
		Logger:  slog.New(slog.DiscardHandler),
		Passive: balancer.PassiveConfig{Disabled: true},
	}, bs)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// startProxy serves p in front of pool on a loopback port and returns its
// address.
func startProxy(t testing.TB, p *Proxy, pool *balancer.Pool, scfg ServerConfig) string {
	t.Helper()
	srv := NewServer(scfg, func(ctx *fasthttp.RequestCtx) {
		p.Serve(ctx, "app", pool)
	}, slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() {
		_ = srv.Shutdown()
		p.Close()
	})
	return ln.Addr().String()
}

// backend starts an httptest server and returns it.
func backend(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// rawExchange writes raw to addr and reads one response (nil if the
// connection closed without one, with what was read in the string).
func rawExchange(t testing.TB, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var seen strings.Builder
	br := bufio.NewReader(io.TeeReader(c, &seen))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, seen.String()
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp, string(body)
}

// get sends a GET through the proxy with net/http.
func get(t testing.TB, c *http.Client, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}
