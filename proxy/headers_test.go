package proxy

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// echoHeaders answers with the request's Host and headers as JSON.
func echoHeaders(w http.ResponseWriter, r *http.Request) {
	h := map[string]string{"Host": r.Host}
	for k, v := range r.Header {
		h[k] = strings.Join(v, "|")
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(h)
}

func TestRequestHeaders(t *testing.T) {
	be := backend(t, echoHeaders)
	beHost := strings.TrimPrefix(be.URL, "http://")
	hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)

	tests := []struct {
		name    string
		cfg     Config
		headers string
		want    map[string]string // "" means must be absent
		check   func(t *testing.T, got map[string]string, resp *http.Response)
	}{
		{
			name: "hop-by-hop fields are removed",
			headers: "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n" +
				"Proxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n" +
				"Upgrade: h2c\r\nTrailer: X-T\r\nX-End-To-End: yes\r\n",
			want: map[string]string{
				"Connection": "", "X-Hop": "", "Keep-Alive": "", "Proxy-Authorization": "",
				"Proxy-Connection": "", "Te": "", "Upgrade": "", "Trailer": "", "X-End-To-End": "yes",
			},
		},
		{
			name:    "Connection cannot remove the fields the gateway adds",
			headers: "Connection: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id\r\n",
			want: map[string]string{
				"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "app.test",
			},
			check: func(t *testing.T, got map[string]string, _ *http.Response) {
				if !hexID.MatchString(got["X-Request-Id"]) {
					t.Errorf("X-Request-Id = %q, want a created one", got["X-Request-Id"])
				}
			},
		},
		{
			name: "forwarding fields from an untrusted client are replaced",
			headers: "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n" +
				"Forwarded: for=6.6.6.6\r\n",
			want: map[string]string{
				"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "app.test",
				"Forwarded": "",
			},
		},
		{
			name:    "forwarding fields from a trusted proxy are extended",
			cfg:     Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
			headers: "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: www.test\r\nForwarded: for=1.2.3.4\r\n",
			want: map[string]string{
				"X-Forwarded-For": "1.2.3.4, 127.0.0.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "www.test",
				"Forwarded": "for=1.2.3.4",
			},
		},
		{
			name:    "Host is preserved by default",
			headers: "",
			want:    map[string]string{"Host": "app.test"},
		},
		{
			name:    "RewriteHost sends the backend's host",
			cfg:     Config{RewriteHost: true},
			headers: "",
			want:    map[string]string{"Host": beHost, "X-Forwarded-Host": "app.test"},
		},
		{
			name:    "a sane X-Request-ID is kept and returned",
			headers: "X-Request-ID: abc-123.def\r\n",
			want:    map[string]string{"X-Request-Id": "abc-123.def"},
			check: func(t *testing.T, _ map[string]string, resp *http.Response) {
				if got := resp.Header.Get("X-Request-Id"); got != "abc-123.def" {
					t.Errorf("response X-Request-Id = %q", got)
				}
			},
		},
		{
			name:    "an unsafe X-Request-ID is replaced, and the new one returned",
			headers: "X-Request-ID: <script>\r\n",
			check: func(t *testing.T, got map[string]string, resp *http.Response) {
				id := got["X-Request-Id"]
				if !hexID.MatchString(id) {
					t.Errorf("backend X-Request-Id = %q, want a created one", id)
				}
				if resp.Header.Get("X-Request-Id") != id {
					t.Errorf("response X-Request-Id = %q, backend saw %q", resp.Header.Get("X-Request-Id"), id)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(tt.cfg)
			addr := startProxy(t, p, testPool(t, be.URL), ServerConfig{})
			resp, body := rawExchange(t, addr, "GET /h HTTP/1.1\r\nHost: app.test\r\n"+tt.headers+"\r\n")
			if resp == nil || resp.StatusCode != 200 {
				t.Fatalf("response %v %q", resp, body)
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("%v: %q", err, body)
			}
			for k, v := range tt.want {
				if v == "" {
					if g, ok := got[k]; ok {
						t.Errorf("backend got %s: %q, want it removed", k, g)
					}
				} else if got[k] != v {
					t.Errorf("backend got %s: %q, want %q", k, got[k], v)
				}
			}
			if tt.check != nil {
				tt.check(t, got, resp)
			}
		})
	}
}

// rawBackend answers every request on its connections with resp, verbatim.
func rawBackend(t *testing.T, resp string) string {
	return rawBackendClosing(t, resp, false)
}

// rawBackendClosing is rawBackend, closing the connection after each answer
// if closeAfter.
func rawBackendClosing(t *testing.T, resp string, closeAfter bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if err != nil || n == 0 {
						return
					}
					if strings.Contains(string(buf[:n]), "\r\n\r\n") {
						if _, err := c.Write([]byte(resp)); err != nil || closeAfter {
							return
						}
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestResponseHeaders(t *testing.T) {
	be := rawBackend(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop, X-Request-Id\r\n"+
		"X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\n"+
		"X-Request-Id: backend-made\r\nX-End-To-End: yes\r\n\r\nok")
	p := New(Config{})
	addr := startProxy(t, p, testPool(t, be), ServerConfig{})
	resp, body := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: app.test\r\nX-Request-Id: client-1\r\n\r\n")
	if resp == nil || resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("response %v %q", resp, body)
	}
	for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("client got %s: %q, want it removed", k, v)
		}
	}
	if resp.Header.Get("X-End-To-End") != "yes" {
		t.Errorf("end-to-end header lost: %v", resp.Header)
	}
	if got := resp.Header.Get("X-Request-Id"); got != "client-1" {
		t.Errorf("X-Request-Id = %q, want the client's", got)
	}
	if resp.Close {
		t.Error("the backend's Connection header closed the client connection")
	}
}

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		xff     []string
		want    string
	}{
		{"untrusted peer: XFF ignored", nil, []string{"1.2.3.4"}, "127.0.0.1"},
		{"trusted peer: right-most entry", trusted, []string{"1.2.3.4, 5.6.7.8"}, "5.6.7.8"},
		{"trusted peer: trusted entries skipped", trusted, []string{"1.2.3.4, 10.1.1.1"}, "1.2.3.4"},
		{"trusted peer: several header lines", trusted, []string{"1.2.3.4", "9.9.9.9, 10.0.0.2"}, "9.9.9.9"},
		{"trusted peer: no XFF", trusted, nil, "127.0.0.1"},
		{"trusted peer: malformed entry stops the walk", trusted, []string{"1.2.3.4, garbage, 10.0.0.3"}, "10.0.0.3"},
		{"trusted peer: all trusted", trusted, []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.1"},
		{"trusted peer: IPv6 entry", trusted, []string{"2001:db8::1"}, "2001:db8::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{TrustedProxies: tt.trusted})
			var ctx fasthttp.RequestCtx
			ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5555}, nil)
			for _, v := range tt.xff {
				ctx.Request.Header.Add("X-Forwarded-For", v)
			}
			if got := p.ClientAddr(&ctx).String(); got != tt.want {
				t.Errorf("ClientAddr = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestBackendResponses(t *testing.T) {
	tests := []struct {
		name       string
		resp       string
		closeAfter bool
		wantCode   int
		wantBody   string
	}{
		{"interim 1xx responses are skipped", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 200, "ok"},
		{"204 has no body", "HTTP/1.1 204 No Content\r\n\r\n", false, 204, ""},
		{"body delimited by close", "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", true, 200, "until the end"},
		{"chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n", false, 200, "abcde"},
		// RFC 9112 section 6.3: chunked wins, Content-Length is dropped.
		{"Content-Length with Transfer-Encoding is reframed", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n", false, 200, "abcde"},
		{"conflicting Content-Length is a bad gateway", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", false, 502, ""},
		{"an unasked 101 is a bad gateway", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false, 502, ""},
		{"a header block over MaxResponseHeaderBytes is a bad gateway", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 40<<10) + "\r\nContent-Length: 2\r\n\r\nok", false, 502, ""},
		{"garbage is a bad gateway", "SPDY/3 what\r\n\r\n", false, 502, ""},
		{"a backend 500 is relayed", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", false, 500, "oops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := testPool(t, rawBackendClosing(t, tt.resp, tt.closeAfter))
			addr := startProxy(t, New(Config{}), pool, ServerConfig{})
			resp, body := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp == nil || resp.StatusCode != tt.wantCode {
				t.Fatalf("got %v %q, want %d", resp, body, tt.wantCode)
			}
			if tt.wantBody != "" && body != tt.wantBody {
				t.Fatalf("body %q, want %q", body, tt.wantBody)
			}
			assertIdle(t, pool)
		})
	}
}
