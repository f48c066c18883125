package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scaleout/scaleout/cdn"
)

// cdnOrigin serves pages (plain, gzip, br, and one far larger than the
// proxy's buffer, so that it streams) and assets.
// cssETag is the stylesheet's current ETag in cdnOrigin.
var cssETag atomic.Value

func init() { cssETag.Store(`"css-7"`) }

func cdnOrigin(t *testing.T) *httptest.Server {
	page := `<html><head><link rel="stylesheet" href="/static/site.css"></head><body><img src="/img/a.png" srcset="/img/a-2x.png 2x"><a href="/about">x</a>` + "\n"
	big := page + strings.Repeat(`<p><img src="/img/row.png"> filler filler filler filler</p>`+"\n", 4000) + "</body></html>"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/static/site.css":
			w.Header().Set("Content-Type", "text/css")
			w.Header().Set("ETag", cssETag.Load().(string))
			fmt.Fprint(w, `body{background:url("/img/bg.png")}`)
		case "/fonts/a.woff2":
			w.Header().Set("Content-Type", "font/woff2")
			w.Write(make([]byte, 1000))
		case "/big":
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("ETag", `"big"`)
			io.WriteString(w, big) // no Content-Length set by us: chunked
		case "/gz":
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			io.WriteString(zw, page)
			zw.Close()
		case "/br":
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Content-Encoding", "br")
			bw, _ := cdn.Encode(w, "br")
			io.WriteString(bw, page)
			bw.Close()
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, page)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestCDNRoute(t *testing.T) {
	o := cdnOrigin(t)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  app: {backends: [{url: %s}]}
routes:
  - path_prefix: /
    upstream: app
    cdn: {host: "https://cdn.example.test", origins: ["https://www.example.test"], pull_header: X-From-CDN}
`, o.URL)
	_, base, admin := runGateway(t, parse(t, cfg))
	cdnRef := `https://cdn.example.test/static/site.css`

	get := func(path string, h ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Accept-Encoding", "identity")
		for i := 0; i+1 < len(h); i += 2 {
			req.Header.Set(h[i], h[i+1])
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	t.Run("plain page", func(t *testing.T) {
		_, b := get("/")
		s := string(b)
		if !strings.Contains(s, cdnRef) || !strings.Contains(s, "https://cdn.example.test/img/a-2x.png 2x") || !strings.Contains(s, `href="/about"`) {
			t.Errorf("page not rewritten as expected:\n%s", s)
		}
	})
	t.Run("streamed page larger than the proxy buffer", func(t *testing.T) {
		resp, b := get("/big")
		s := string(b)
		if n := strings.Count(s, "https://cdn.example.test/img/row.png"); n != 4000 {
			t.Errorf("%d of 4000 references rewritten in a streamed page", n)
		}
		if strings.Contains(s, `src="/img/`) {
			t.Error("a reference in the streamed page was missed")
		}
		if et := resp.Header.Get("ETag"); et != `W/"big"` {
			t.Errorf("ETag of a rewritten page = %q, want it weakened", et)
		}
	})
	t.Run("gzip page re-encoded for a gzip client", func(t *testing.T) {
		resp, b := get("/gz", "Accept-Encoding", "gzip")
		if resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		plain, _ := io.ReadAll(zr)
		if !strings.Contains(string(plain), cdnRef) {
			t.Errorf("gzip page not rewritten: %s", plain)
		}
	})
	t.Run("br page decoded for an identity client", func(t *testing.T) {
		resp, b := get("/br")
		if resp.Header.Get("Content-Encoding") != "" || !strings.Contains(string(b), cdnRef) {
			t.Errorf("br page for identity client: encoding %q body %q", resp.Header.Get("Content-Encoding"), b)
		}
	})
	t.Run("css", func(t *testing.T) {
		_, b := get("/static/site.css")
		if !strings.Contains(string(b), `url("https://cdn.example.test/img/bg.png")`) {
			t.Errorf("css not rewritten: %s", b)
		}
	})
	t.Run("asset headers and offload", func(t *testing.T) {
		resp, _ := get("/fonts/a.woff2", "X-From-CDN", "edge", "Origin", "https://www.example.test")
		if !strings.Contains(resp.Header.Get("Cache-Control"), "public") || resp.Header.Get("Access-Control-Allow-Origin") != "https://www.example.test" {
			t.Errorf("font served as CDN origin: Cache-Control %q ACAO %q", resp.Header.Get("Cache-Control"), resp.Header.Get("Access-Control-Allow-Origin"))
		}
		get("/fonts/a.woff2", "X-From-CDN", "edge")
		get("/fonts/a.woff2") // a user straight at the origin: an offload miss
		r, err := http.Get(admin + "/api/cdn")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var st struct {
			Routes []struct {
				CDNRequests    int64   `json:"cdn_requests"`
				DirectRequests int64   `json:"direct_requests"`
				Offload        float64 `json:"offload_ratio"`
			} `json:"routes"`
		}
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil || len(st.Routes) != 1 {
			t.Fatalf("/api/cdn: %v %+v", err, st)
		}
		got := st.Routes[0]
		if got.CDNRequests < 2 || got.DirectRequests < 1 || got.Offload <= 0 || got.Offload >= 1 {
			t.Errorf("offload stats %+v: want 2 CDN pulls, 1 direct, a ratio between", got)
		}
	})
}

func TestCDNFingerprint(t *testing.T) {
	o := cdnOrigin(t)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  app: {backends: [{url: %s}]}
routes:
  - path_prefix: /
    upstream: app
    cdn: {host: "https://cdn.example.test", fingerprint: true}
`, o.URL)
	g, base, _ := runGateway(t, parse(t, cfg))
	g.mu.Lock()
	for _, cr := range g.rewriters {
		cr.versions.recheck = 100 * time.Millisecond
	}
	g.mu.Unlock()
	read := func(path string) (*http.Response, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if _, page := read("/"); strings.Contains(page, "site.css?v=") {
		t.Fatalf("a version appeared before the asset was ever seen: %s", page)
	}
	read("/static/site.css") // the gateway learns the asset's ETag
	_, page := read("/")
	i := strings.Index(page, "https://cdn.example.test/static/site.css?v=")
	if i < 0 {
		t.Fatalf("fingerprinted URL missing: %s", page)
	}
	versioned := page[i+len("https://cdn.example.test") : i+strings.IndexByte(page[i:], '"')]
	resp, _ := read(versioned)
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Errorf("versioned asset Cache-Control %q, want immutable", cc)
	}
	resp, _ = read("/static/site.css")
	if cc := resp.Header.Get("Cache-Control"); strings.Contains(cc, "immutable") {
		t.Errorf("unversioned asset must not be immutable: %q", cc)
	}
	resp, _ = read("/static/site.css?v=made-up")
	if cc := resp.Header.Get("Cache-Control"); strings.Contains(cc, "immutable") {
		t.Errorf("a made-up version must not be immutable: %q", cc)
	}
	// The asset changes at the origin and never passes through the gateway
	// again (the CDN has it): pages pick the new version up anyway.
	cssETag.Store(`"css-8"`)
	defer cssETag.Store(`"css-7"`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, page2 := read("/")
		j := strings.Index(page2, "https://cdn.example.test/static/site.css?v=")
		if j >= 0 && page2[j:j+len(versioned)+len("https://cdn.example.test")] != "https://cdn.example.test"+versioned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page still names the old version after the asset changed: %s", versioned)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
