package gateway

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// raw sends a request as bytes and reads one response.
func raw(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", req, err)
	}
	resp.Body.Close()
	return resp
}

func TestRegressionRequestIDNotLeakedToNextRequest(t *testing.T) {
	a := newTestBackend(t, "a")
	_, base, _ := runGateway(t, parse(t, oneUpstream("round-robin", "", a)))
	addr := strings.TrimPrefix(base, "http://")
	for i := range 10 {
		secret := fmt.Sprintf("alice-secret-%d", i)
		raw(t, addr, "GET /alice HTTP/1.1\r\nHost: x\r\nX-Request-ID: "+secret+"\r\nConnection: close\r\n\r\n")
		resp := raw(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		if resp.StatusCode != 400 {
			t.Fatalf("ambiguous framing got %d", resp.StatusCode)
		}
		if got := resp.Header.Get("X-Request-Id"); got == secret || got == "" {
			t.Fatalf("the 400 carried X-Request-Id %q (previous request's was %q)", got, secret)
		}
	}
}

func TestRegressionOversizedBodyAnsweredWithoutWaiting(t *testing.T) {
	a := newTestBackend(t, "a")
	_, base, _ := runGateway(t, parse(t, oneUpstream("round-robin", "server: {max_body_bytes: 1MiB}\n", a)))
	addr := strings.TrimPrefix(base, "http://")
	// No body follows: the answer must not wait for it.
	start := time.Now()
	resp := raw(t, addr, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 11000000\r\n\r\n")
	if resp.StatusCode != 413 || time.Since(start) > 3*time.Second {
		t.Errorf("oversized Content-Length: %d after %v, want 413 at once", resp.StatusCode, time.Since(start))
	}
	resp = raw(t, addr, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 11000000\r\nExpect: 100-continue\r\n\r\n")
	if resp.StatusCode == 100 {
		t.Error("100 Continue sent for a body over the limit")
	}
}

func TestRegressionBodyReadTimeout(t *testing.T) {
	a := newTestBackend(t, "a")
	_, base, _ := runGateway(t, parse(t, oneUpstream("round-robin", "server: {body_read_timeout: 300ms}\n", a)))
	addr := strings.TrimPrefix(base, "http://")
	start := time.Now()
	resp := raw(t, addr, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
	if resp.StatusCode != 408 || time.Since(start) > 3*time.Second {
		t.Errorf("a body that never comes: %d after %v, want 408 after the body read timeout", resp.StatusCode, time.Since(start))
	}
}

func TestRegressionHTTP10WithoutHostGetsOne(t *testing.T) {
	var gotHost string
	b := newTestBackend(t, "b")
	b.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost = r.Host
		fmt.Fprint(w, "ok")
	})
	_, base, _ := runGateway(t, parse(t, oneUpstream("round-robin", "", b)))
	addr := strings.TrimPrefix(base, "http://")
	resp := raw(t, addr, "GET /x HTTP/1.0\r\n\r\n")
	if resp.StatusCode != 200 || gotHost == "" {
		t.Errorf("HTTP/1.0 without Host: %d, backend saw Host %q", resp.StatusCode, gotHost)
	}
}
