package balancer

import (
	"net"
	"strings"
	"testing"
)

func TestNewBackend(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw     string
		weight  int
		wantID  string
		wantW   int
		wantErr string
	}{
		{raw: "http://127.0.0.1:9001", weight: 2, wantID: "127.0.0.1:9001", wantW: 2},
		{raw: "http://app.internal", weight: 0, wantID: "app.internal:80", wantW: 1},
		{raw: "https://app.internal/ignored/path", weight: -3, wantID: "app.internal:443", wantW: 1},
		{raw: "http://[::1]:8080", weight: 1, wantID: "[::1]:8080", wantW: 1},
		{raw: "ftp://127.0.0.1:21", wantErr: "scheme must be http or https"},
		{raw: "127.0.0.1:9001", wantErr: "backend url \"127.0.0.1:9001\""},
		{raw: "localhost:9001", wantErr: "scheme must be http or https"},
		{raw: "http://", wantErr: "no host"},
		{raw: "http://:9001", wantErr: "no host"},
		{raw: "http://0:", weight: 1, wantID: "0:80", wantW: 1},
		{raw: "http://]", wantErr: "host \"]\""},
		{raw: "http://x:99999", wantErr: "port \"99999\": must be 1-65535"},
		{raw: "http://x:0", wantErr: "port \"0\""},
		{raw: "http://user:pw@127.0.0.1:9001", wantErr: "user info"},
		{raw: "http://127.0.0.1:9001/?a=b", wantErr: "query"},
		{raw: "http://127.0.0.1:9001/#top", wantErr: "fragment"},
		{raw: "http://127.0.0.1:9001\n", wantErr: "invalid control character"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			t.Parallel()
			b, err := NewBackend(tt.raw, tt.weight)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.ID != tt.wantID || b.Weight != tt.wantW || b.CurrentWeight() != tt.wantW || b.State() != Healthy {
				t.Errorf("backend %s weight %d/%d %s, want %s weight %d healthy", b.ID, b.Weight, b.CurrentWeight(), b.State(), tt.wantID, tt.wantW)
			}
		})
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"http://127.0.0.1:9001", "https://example.com", "http://[::1]:80/x", "http://a:b@c",
		"http://%41:80", "http://[fe80::1%25eth0]:8080", "HTTP://X:1", "http://x:99999", "http:opaque",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := ParseURL(raw)
		if err != nil {
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("%q: scheme %q accepted", raw, u.Scheme)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" || port == "" {
			t.Fatalf("%q: host %q is not host:port (%v)", raw, u.Host, err)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("%q: user, query or fragment accepted", raw)
		}
		// The backend made from it names the same host.
		b, err := NewBackend(raw, 1)
		if err != nil || b.ID != u.Host {
			t.Fatalf("%q: NewBackend %v, %v", raw, b, err)
		}
	})
}
