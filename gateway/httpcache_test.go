package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// origin is an httptest origin whose behaviour is chosen by path; it counts
// the requests each path receives.
type origin struct {
	*httptest.Server
	mu     sync.Mutex
	counts map[string]int
	fail   atomic.Bool // answer 503 to everything but /health
	etag   atomic.Value
}

func newOrigin(t *testing.T) *origin {
	o := &origin{counts: map[string]int{}}
	o.etag.Store(`"v1"`)
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.Close)
	return o
}

func (o *origin) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[path]
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" {
		return
	}
	o.mu.Lock()
	o.counts[r.URL.Path]++
	n := o.counts[r.URL.Path]
	o.mu.Unlock()
	if o.fail.Load() {
		http.Error(w, "down", 503)
		return
	}
	h := w.Header()
	switch r.URL.Path {
	case "/fresh":
		h.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "fresh %d", n)
	case "/aged":
		h.Set("Cache-Control", "max-age=60")
		h.Set("Age", "50")
		fmt.Fprint(w, "aged")
	case "/nofresh":
		fmt.Fprintf(w, "nofresh %d", n)
	case "/error":
		w.WriteHeader(500)
		fmt.Fprintf(w, "error %d", n)
	case "/public":
		h.Set("Cache-Control", "public, max-age=60")
		fmt.Fprint(w, "public")
	case "/star":
		h.Set("Cache-Control", "max-age=60")
		h.Set("Vary", "*")
		fmt.Fprint(w, "star")
	case "/etag":
		etag := o.etag.Load().(string)
		h.Set("Cache-Control", "max-age=0, must-revalidate")
		h.Set("ETag", etag)
		h.Set("X-Version", fmt.Sprint(n))
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(304)
			return
		}
		fmt.Fprint(w, "etag body "+etag)
	case "/swr":
		// max-age=2, not 1: Date has one-second resolution, so a refreshed
		// entry may start up to a second old.
		h.Set("Cache-Control", "max-age=2, stale-while-revalidate=30")
		time.Sleep(50 * time.Millisecond)
		fmt.Fprintf(w, "swr %d", n)
	case "/sie":
		h.Set("Cache-Control", "max-age=1, stale-if-error=60")
		fmt.Fprintf(w, "sie %d", n)
	case "/slow":
		h.Set("Cache-Control", "max-age=60")
		time.Sleep(200 * time.Millisecond)
		fmt.Fprintf(w, "slow %d", n)
	case "/slowprivate":
		h.Set("Cache-Control", "max-age=60")
		h.Set("Set-Cookie", "session="+r.Header.Get("X-User"))
		time.Sleep(200 * time.Millisecond)
		fmt.Fprint(w, "for "+r.Header.Get("X-User"))
	case "/chunked":
		h.Set("Cache-Control", "max-age=60")
		io.WriteString(w, "part one ")
		w.(http.Flusher).Flush() // no Content-Length: chunked
		fmt.Fprintf(w, "part two %d", n)
	case "/varystar":
		h.Set("Cache-Control", "max-age=60")
		h.Add("Vary", "Accept")
		h.Add("Vary", "*")
		fmt.Fprint(w, "vs")
	case "/cookie":
		h.Set("Cache-Control", "max-age=60")
		h.Set("Set-Cookie", "session=abc")
		fmt.Fprintf(w, "cookie %d", n)
	case "/nostore-etag":
		h.Set("Cache-Control", "no-store")
		h.Set("ETag", `"ns"`)
		fmt.Fprint(w, "ns")
	case "/ranged":
		h.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "range=%s", r.Header.Get("Range"))
	case "/reval":
		h.Set("ETag", `"rv"`)
		if r.Header.Get("If-None-Match") == `"rv"` {
			h.Set("Cache-Control", "max-age=60")
			w.WriteHeader(304)
			return
		}
		h.Set("Cache-Control", "max-age=0")
		fmt.Fprint(w, "reval")
	case "/big":
		h.Set("Cache-Control", "max-age=60")
		w.Write([]byte(strings.Repeat("b", 200<<10)))
	case "/range":
		h.Set("Cache-Control", "max-age=60")
		h.Set("ETag", `"r"`)
		fmt.Fprint(w, "0123456789")
	case "/tagged":
		h.Set("Cache-Control", "max-age=60")
		h.Set("Cache-Tag", "product-1, list")
		fmt.Fprintf(w, "tagged %d", n)
	case "/item", "/item/created":
		if r.Method == "POST" {
			h.Set("Location", "/item/created")
			w.WriteHeader(201)
			return
		}
		h.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "%s %d", r.URL.Path, n)
	default:
		http.NotFound(w, r)
	}
}

func cachedGateway(t *testing.T, o *origin, redisURL, extra string) (*Gateway, string, string) {
	t.Helper()
	layers := "cache:\n  memory: {max_bytes: 16MiB}\n"
	if redisURL != "" {
		layers += fmt.Sprintf("  redis: {url: %q, prefix: %q}\n", redisURL, fmt.Sprintf("scaleout:test:%s:%d:", t.Name(), time.Now().UnixNano()))
	}
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
%supstreams:
  app: {backends: [{url: %s}]}
routes:
  - path_prefix: /
    upstream: app
    cache: {enabled: true, max_object_bytes: 100KiB%s}
`, layers, o.URL, extra)
	return runGateway(t, parse(t, cfg))
}

type result struct {
	code   int
	body   string
	header http.Header
}

func do(t *testing.T, method, url string, h ...string) result {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(h); i += 2 {
		if h[i] == "Host" {
			req.Host = h[i+1]
		}
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, string(b), resp.Header}
}

func TestHTTPCacheStoresOnlyCacheable(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", "")
	tests := []struct {
		path    string
		h       []string
		reaches int // origin requests for 3 GETs
		xcache  string
	}{
		{"/fresh", nil, 1, "HIT"},
		{"/nofresh", nil, 3, "MISS"},
		{"/error", nil, 3, "MISS"},
		{"/star", nil, 3, "MISS"},
		{"/fresh2", nil, 3, "MISS"}, // 404 without freshness
		{"/public", []string{"Authorization", "Bearer x"}, 1, "HIT"},
		{"/slowprivate", []string{"X-User", "a"}, 3, "MISS"}, // Set-Cookie
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			var last result
			for range 3 {
				last = do(t, "GET", base+tt.path, tt.h...)
			}
			if got := o.count(tt.path); got != tt.reaches {
				t.Errorf("origin saw %d requests for 3 GETs, want %d", got, tt.reaches)
			}
			if last.header.Get("X-Cache") != tt.xcache {
				t.Errorf("X-Cache = %q, want %q", last.header.Get("X-Cache"), tt.xcache)
			}
		})
	}
	// A response to a request with Authorization is not shared without public/s-maxage.
	do(t, "GET", base+"/fresh?auth", "Authorization", "Bearer a")
	if r := do(t, "GET", base+"/fresh?auth", "Authorization", "Bearer b"); r.header.Get("X-Cache") == "HIT" {
		t.Error("a response to an authorized request was shared")
	}
}

func TestHTTPCacheAge(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", "")
	do(t, "GET", base+"/aged")
	r := do(t, "GET", base+"/aged")
	if r.header.Get("X-Cache") != "HIT" || (r.header.Get("Age") != "50" && r.header.Get("Age") != "51") {
		t.Errorf("hit Age = %q (X-Cache %q), want 50 from the origin's Age", r.header.Get("Age"), r.header.Get("X-Cache"))
	}
}

func TestHTTPCacheVary(t *testing.T) {
	o := newOrigin(t)
	o.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.counts[r.URL.Path]++
		o.mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		fmt.Fprint(w, r.Header.Get("Accept-Language"))
	})
	_, base, _ := cachedGateway(t, o, "", "")
	for range 2 {
		for _, lang := range []string{"en", "fr", "de"} {
			if r := do(t, "GET", base+"/v", "Accept-Language", lang); r.body != lang {
				t.Fatalf("Accept-Language %s got %q", lang, r.body)
			}
		}
	}
	if n := o.count("/v"); n != 3 {
		t.Errorf("origin saw %d requests for 3 languages twice, want 3", n)
	}
}

func TestHTTPCacheRevalidation(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", "")
	first := do(t, "GET", base+"/etag")
	if first.code != 200 || first.body != `etag body "v1"` {
		t.Fatalf("first: %+v", first)
	}
	// Stale at once (max-age=0): revalidated with If-None-Match, 304 → served from cache.
	second := do(t, "GET", base+"/etag")
	if second.code != 200 || second.body != first.body || second.header.Get("X-Version") != "2" {
		t.Errorf("revalidated response: %d %q X-Version %q (want the stored body with the 304's headers)", second.code, second.body, second.header.Get("X-Version"))
	}
	// A client's matching conditional gets 304; an unconditional one the full 200.
	if r := do(t, "GET", base+"/etag", "If-None-Match", `"v1"`); r.code != 304 || r.body != "" {
		t.Errorf("conditional request: %d %q, want 304", r.code, r.body)
	}
	if r := do(t, "GET", base+"/etag"); r.code != 200 || r.body == "" {
		t.Errorf("unconditional request: %d %q, want the full 200", r.code, r.body)
	}
	// The origin changes: the next request gets the new body.
	o.etag.Store(`"v2"`)
	if r := do(t, "GET", base+"/etag"); r.body != `etag body "v2"` {
		t.Errorf("after change: %q", r.body)
	}
	// Request no-cache / max-age=0 on a fresh entry go to the origin.
	do(t, "GET", base+"/fresh")
	n := o.count("/fresh")
	do(t, "GET", base+"/fresh", "Cache-Control", "no-cache")
	do(t, "GET", base+"/fresh", "Cache-Control", "max-age=0")
	if o.count("/fresh") != n+2 {
		t.Errorf("no-cache / max-age=0 requests were answered from cache")
	}
}

func TestHTTPCacheInvalidatesAfterWrite(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", "")
	do(t, "GET", base+"/item")
	do(t, "GET", base+"/item/created")
	if r := do(t, "GET", base+"/item"); r.header.Get("X-Cache") != "HIT" {
		t.Fatalf("not cached: %v", r.header)
	}
	if r := do(t, "POST", base+"/item"); r.code != 201 {
		t.Fatalf("POST: %d", r.code)
	}
	for _, p := range []string{"/item", "/item/created"} {
		if r := do(t, "GET", base+p); r.header.Get("X-Cache") == "HIT" {
			t.Errorf("%s still served from cache after a POST (Location %s)", p, "/item/created")
		}
	}
}

func TestHTTPCacheCoalescing(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", "")
	var wg sync.WaitGroup
	bodies := make([]string, 40)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bodies[i] = do(t, "GET", base+"/slow").body
		}()
	}
	wg.Wait()
	if n := o.count("/slow"); n != 1 {
		t.Errorf("40 concurrent misses made %d origin requests, want 1", n)
	}
	for _, b := range bodies {
		if b != "slow 1" {
			t.Fatalf("a coalesced client got %q", b)
		}
	}
	// A response that may not be shared is never handed to the waiters.
	var cookies sync.Map
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprint("user", i)
			r := do(t, "GET", base+"/slowprivate", "X-User", user)
			cookies.Store(user, r.header.Get("Set-Cookie")+"|"+r.body)
		}()
	}
	wg.Wait()
	cookies.Range(func(k, v any) bool {
		if want := "session=" + k.(string) + "|for " + k.(string); v != want {
			t.Errorf("%s got %q, want %q", k, v, want)
		}
		return true
	})
}

func TestHTTPCacheStaleWhileRevalidate(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", "")
	do(t, "GET", base+"/swr")
	time.Sleep(2100 * time.Millisecond)
	r := do(t, "GET", base+"/swr")
	if r.header.Get("X-Cache") != "STALE" || r.body != "swr 1" {
		t.Fatalf("stale-while-revalidate: %q %q", r.header.Get("X-Cache"), r.body)
	}
	for range 5 {
		do(t, "GET", base+"/swr")
	}
	deadline := time.Now().Add(3 * time.Second)
	for o.count("/swr") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if n := o.count("/swr"); n != 2 {
		t.Errorf("origin saw %d requests, want 2 (one background refresh)", n)
	}
	if r := do(t, "GET", base+"/swr"); r.body != "swr 2" || r.header.Get("X-Cache") != "HIT" {
		t.Errorf("after refresh: %q %q", r.header.Get("X-Cache"), r.body)
	}
}

func TestHTTPCacheStaleIfError(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", "")
	do(t, "GET", base+"/sie")
	time.Sleep(1100 * time.Millisecond)
	o.fail.Store(true)
	r := do(t, "GET", base+"/sie")
	if r.code != 200 || r.body != "sie 1" || r.header.Get("X-Cache") != "STALE" {
		t.Errorf("stale-if-error: %d %q %q", r.code, r.body, r.header.Get("X-Cache"))
	}
}

func TestHTTPCacheLargeObjectStreamsUncached(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", "")
	for range 2 {
		if r := do(t, "GET", base+"/big"); len(r.body) != 200<<10 {
			t.Fatalf("big body: %d bytes", len(r.body))
		}
	}
	if n := o.count("/big"); n != 2 {
		t.Errorf("an object over max_object_bytes was cached (%d origin requests)", n)
	}
}

func TestHTTPCacheRange(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", "")
	do(t, "GET", base+"/range")
	tests := []struct {
		rng, ifRange string
		code         int
		body, cr     string
	}{
		{"bytes=2-5", "", 206, "2345", "bytes 2-5/10"},
		{"bytes=-3", "", 206, "789", "bytes 7-9/10"},
		{"bytes=8-", "", 206, "89", "bytes 8-9/10"},
		{"bytes=20-", "", 416, "", "bytes */10"},
		{"bytes=1-2,4-5", "", 200, "0123456789", ""},
		{"bytes=2-5", `"other"`, 200, "0123456789", ""},
		{"bytes=2-5", `"r"`, 206, "2345", "bytes 2-5/10"},
	}
	for _, tt := range tests {
		r := do(t, "GET", base+"/range", "Range", tt.rng, "If-Range", tt.ifRange)
		if r.code != tt.code || r.body != tt.body || r.header.Get("Content-Range") != tt.cr {
			t.Errorf("Range %q If-Range %q: %d %q %q", tt.rng, tt.ifRange, r.code, r.body, r.header.Get("Content-Range"))
		}
	}
	if n := o.count("/range"); n != 1 {
		t.Errorf("range requests reached the origin: %d", n)
	}
}

// TestHTTPCachePurgeAcrossNodes: two gateways sharing Redis share entries,
// and a purge on one (by URL, by tag) reaches the other.
func TestHTTPCachePurgeAcrossNodes(t *testing.T) {
	o := newOrigin(t)
	prefix := fmt.Sprintf("scaleout:test:purge:%d:", time.Now().UnixNano())
	mk := func() (string, string) {
		cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
cache:
  redis: {url: "redis://127.0.0.1:6379/0", prefix: %q}
upstreams:
  app: {backends: [{url: %s}]}
routes:
  - {path_prefix: /, upstream: app, cache: {enabled: true}}
`, prefix, o.URL)
		_, base, admin := runGateway(t, parse(t, cfg))
		return base, admin
	}
	a, adminA := mk()
	b, _ := mk()
	// Both nodes must see the same host for the keys to match.
	host := "shop.test"
	get := func(base, path string) result { return do(t, "GET", base+path, "Host", host) }
	for _, p := range []string{"/fresh", "/tagged"} {
		get(a, p)
		if r := get(b, p); r.header.Get("X-Cache") != "HIT" {
			t.Fatalf("node B did not share node A's entry for %s: %v", p, r.header.Get("X-Cache"))
		}
	}
	purge := func(body string) {
		req, _ := http.NewRequestWithContext(context.Background(), "POST", adminA+"/api/purge", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("purge %s: %v %v", body, err, resp.Status)
		}
		resp.Body.Close()
	}
	purge(`{"url": "http://shop.test/fresh"}`)
	purge(`{"tags": ["product-1"]}`)
	deadline := time.Now().Add(2 * time.Second)
	for _, p := range []string{"/fresh", "/tagged"} {
		for {
			r := get(b, p)
			if r.header.Get("X-Cache") != "HIT" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("purge of %s on node A did not reach node B", p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	req, _ := http.NewRequest("POST", adminA+"/api/purge", strings.NewReader(`{"url": "not a url"}`))
	resp, _ := http.DefaultClient.Do(req)
	if resp.StatusCode != 400 {
		t.Errorf("bad purge URL: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestHTTPCacheReviewFixes(t *testing.T) {
	o := newOrigin(t)
	_, base, _ := cachedGateway(t, o, "", ", store_set_cookie: true")
	t.Run("chunked response is stored", func(t *testing.T) {
		first := do(t, "GET", base+"/chunked")
		second := do(t, "GET", base+"/chunked")
		if first.body != "part one part two 1" || second.body != first.body || second.header.Get("X-Cache") != "HIT" {
			t.Errorf("chunked: %q then %q (%s)", first.body, second.body, second.header.Get("X-Cache"))
		}
	})
	t.Run("second Vary header with * is never stored", func(t *testing.T) {
		do(t, "GET", base+"/varystar")
		if r := do(t, "GET", base+"/varystar"); r.header.Get("X-Cache") == "HIT" {
			t.Error("Vary: * in a second header was cached")
		}
	})
	t.Run("stored cookie still reaches the fetching client only", func(t *testing.T) {
		first := do(t, "GET", base+"/cookie")
		second := do(t, "GET", base+"/cookie")
		if first.header.Get("Set-Cookie") != "session=abc" {
			t.Errorf("the client that fetched lost its cookie: %v", first.header)
		}
		if second.header.Get("X-Cache") != "HIT" || second.header.Get("Set-Cookie") != "" {
			t.Errorf("hit: X-Cache %q Set-Cookie %q", second.header.Get("X-Cache"), second.header.Get("Set-Cookie"))
		}
	})
	t.Run("request ID is not replayed from the store", func(t *testing.T) {
		do(t, "GET", base+"/fresh?rid", "X-Request-ID", "client-a-id")
		if r := do(t, "GET", base+"/fresh?rid"); r.header.Get("X-Request-Id") == "client-a-id" {
			t.Error("another client's request ID came back from the cache")
		}
	})
	t.Run("client conditional on an unstored response", func(t *testing.T) {
		if r := do(t, "GET", base+"/nostore-etag", "If-None-Match", `"ns"`); r.code != 304 {
			t.Errorf("matching If-None-Match on a no-store response: %d", r.code)
		}
	})
	t.Run("range miss passes through", func(t *testing.T) {
		if r := do(t, "GET", base+"/ranged", "Range", "bytes=0-9"); r.body != "range=bytes=0-9" {
			t.Errorf("the origin did not see the Range of a miss: %q", r.body)
		}
	})
	t.Run("304 renews freshness", func(t *testing.T) {
		do(t, "GET", base+"/reval")
		do(t, "GET", base+"/reval") // stale at once: revalidated, the 304 says max-age=60
		n := o.count("/reval")
		if r := do(t, "GET", base+"/reval"); r.header.Get("X-Cache") != "HIT" || o.count("/reval") != n {
			t.Errorf("after a 304 with max-age=60 the entry was not fresh: %s, origin %d→%d", r.header.Get("X-Cache"), n, o.count("/reval"))
		}
	})
	t.Run("min-fresh is not answered stale", func(t *testing.T) {
		do(t, "GET", base+"/swr")
		if r := do(t, "GET", base+"/swr", "Cache-Control", "min-fresh=100"); r.header.Get("X-Cache") == "STALE" {
			t.Error("min-fresh request served stale")
		}
	})
}
