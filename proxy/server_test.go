package proxy

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestBadRequestsAreRefused(t *testing.T) {
	cb, u := newCountingBackend(t, 200)
	pool := testPool(t, u)
	addr := startProxy(t, New(Config{}), pool, ServerConfig{MaxHeaderBytes: 4096})
	tests := []struct {
		name string
		raw  string
		want int
	}{
		{"malformed request line", "GET\r\n\r\n", 400},
		{"garbage", "\x00\x01\x02 nonsense\r\n\r\n", 400},
		{"header without colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400},
		{"space before colon", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc", 400},
		{"header block over MaxHeaderBytes", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 8000) + "\r\n\r\n", 431},
		{"Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding and Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400},
		{"duplicate equal Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"conflicting Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"Content-Length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400},
		{"signed Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400},
		{"negative Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"unknown Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400},
		{"chunked not last", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400},
		{"two Transfer-Encoding lines", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400},
		{"obsolete line folding", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400},
		{"obsolete line folding into Host", "GET / HTTP/1.1\r\nHost: a\r\n\tevil\r\n\r\n", 400},
		{"missing Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := cb.n.Load()
			resp, seen := rawExchange(t, addr, tt.raw)
			if resp == nil {
				t.Fatalf("no response, read %q; want %d", seen, tt.want)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.want)
			}
			if n := cb.n.Load() - before; n != 0 {
				t.Fatalf("the request reached the backend (%d times)", n)
			}
		})
	}
	assertIdle(t, pool)
}

func TestSlowClientHeadersTimeOut(t *testing.T) {
	_, u := newCountingBackend(t, 200)
	addr := startProxy(t, New(Config{}), testPool(t, u), ServerConfig{ReadHeaderTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("connection not closed by the server: %v", err)
	}
	if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 408") {
		t.Fatalf("got %q, want 408 or a closed connection", got)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatal("the slow client was not timed out")
	}
}
