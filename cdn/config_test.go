package cdn

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		mention string // the error must name this
	}{
		{"missing host", Config{}, "host is required"},
		{"host without scheme", Config{Host: "cdn.example.com"}, `"cdn.example.com"`},
		{"host with bad scheme", Config{Host: "ftp://cdn.example.com"}, "scheme must be http or https"},
		{"host unparsable", Config{Host: "http://cdn example.com/%zz"}, "http://cdn example.com/%zz"},
		{"host with query", Config{Host: "https://cdn.example.com/?a=b"}, "query"},
		{"origin with path", Config{Host: "https://cdn.test", Origins: []string{"https://a.test/app"}}, `origin "https://a.test/app"`},
		{"origin without scheme", Config{Host: "https://cdn.test", Origins: []string{"a.test"}}, `origin "a.test"`},
		{"bad glob", Config{Host: "https://cdn.test", Patterns: []string{"*.png", "[a-"}}, `pattern "[a-"`},
		{"relative path pattern", Config{Host: "https://cdn.test", Patterns: []string{"static/"}}, `pattern "static/"`},
		{"empty pattern", Config{Host: "https://cdn.test", Patterns: []string{""}}, "empty pattern"},
		{"bad version param", Config{Host: "https://cdn.test", VersionParam: "v&x"}, "version_param"},
		{"bad cdn header", Config{Host: "https://cdn.test", CDNHeader: "X From"}, "cdn_header"},
		{"invalid cdn source", Config{Host: "https://cdn.test", CDNSources: []netip.Prefix{{}}}, "cdn_sources"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
	for _, host := range []string{"https://cdn.example.com", "http://cdn.localhost:8081/", "//cdn.example.com", "https://cdn.example.com/app"} {
		if _, err := New(Config{Host: host}); err != nil {
			t.Errorf("host %q: %v", host, err)
		}
	}
}

func TestHostWithPath(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, func(c *Config) { c.Host = "https://cdn.test/app/" })
	got, _ := rewriteString(t, r, "https://www.example.test/", "text/html", `<img src="/a.png">`)
	if got != `<img src="https://cdn.test/app/a.png">` {
		t.Errorf("got %s", got)
	}
}

func TestPatterns(t *testing.T) {
	t.Parallel()
	def := testRewriter(t, nil)
	custom := testRewriter(t, func(c *Config) {
		c.Patterns = []string{"*.css", "/static/", "/media/*/*.jpg", "logo-*.svg"}
	})
	tests := []struct {
		r    *Rewriter
		path string
		want bool
	}{
		{def, "/a.png", true}, {def, "/A.PNG", true}, {def, "/x/y/app.min.js", true}, {def, "/f.woff2", true},
		{def, "/v.mp4", true}, {def, "/static/anything", true}, {def, "/index.html", false}, {def, "/api/png", false},
		{def, "/png", false}, {def, "/a.png/", false}, {def, "/", false},
		{custom, "/s.css", true}, {custom, "/a.png", false}, {custom, "/static/a", true}, {custom, "/media/2024/a.jpg", true},
		{custom, "/media/a.jpg", false}, {custom, "/img/logo-dark.svg", true}, {custom, "/img/icon.svg", false},
	}
	for _, tc := range tests {
		if got := tc.r.IsAsset(tc.path); got != tc.want {
			t.Errorf("IsAsset(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
	if len(DefaultPatterns()) == 0 || &DefaultPatterns()[0] == &DefaultPatterns()[0] {
		t.Error("DefaultPatterns must return a fresh copy")
	}
}

func TestAssetHeaders(t *testing.T) {
	t.Parallel()
	one := testRewriter(t, func(c *Config) { c.Origins = []string{"https://www.example.test"} })
	two := testRewriter(t, nil)
	none := testRewriter(t, func(c *Config) { c.Origins = nil })
	fp := testRewriter(t, func(c *Config) { c.Fingerprint = true })
	custom := testRewriter(t, func(c *Config) { c.AssetCacheControl = "public, max-age=600" })
	tests := []struct {
		name        string
		r           *Rewriter
		path, query string
		origin      string
		want        Headers
		asset       bool
	}{
		{"not an asset", two, "/index.html", "", "", Headers{}, false},
		{"image", two, "/a.png", "", "", Headers{CacheControl: DefaultCacheControl}, true},
		{"fingerprinted request", fp, "/a.png", "x=1&v=abc", "", Headers{CacheControl: DefaultImmutableCacheControl}, true},
		{"fingerprint on, unversioned request", fp, "/a.png", "", "", Headers{CacheControl: DefaultCacheControl}, true},
		{"configured cache control", custom, "/a.png", "v=1", "", Headers{CacheControl: "public, max-age=600"}, true},
		{"font, allowed origin", two, "/f.woff2", "", "http://127.0.0.1:8080", Headers{CacheControl: DefaultCacheControl, AccessControlAllowOrigin: "http://127.0.0.1:8080", Vary: "Origin"}, true},
		{"font, other origin", two, "/f.woff2", "", "https://evil.test", Headers{CacheControl: DefaultCacheControl, Vary: "Origin"}, true},
		{"font, no Origin, one page origin", one, "/F.TTF", "", "", Headers{CacheControl: DefaultCacheControl, AccessControlAllowOrigin: "https://www.example.test", Vary: "Origin"}, true},
		{"font, no Origin, two page origins", two, "/f.woff", "", "", Headers{CacheControl: DefaultCacheControl, Vary: "Origin"}, true},
		{"font, no origins configured", none, "/f.woff2", "", "https://x.test", Headers{CacheControl: DefaultCacheControl, AccessControlAllowOrigin: "*"}, true},
		{"module script", two, "/app.mjs", "", "https://www.example.test", Headers{CacheControl: DefaultCacheControl, AccessControlAllowOrigin: "https://www.example.test", Vary: "Origin"}, true},
		{"image needs no CORS", two, "/a.png", "", "https://www.example.test", Headers{CacheControl: DefaultCacheControl}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.r.AssetHeaders(tc.path, tc.query, tc.origin)
			if ok != tc.asset || got != tc.want {
				t.Errorf("AssetHeaders = %+v, %v; want %+v, %v", got, ok, tc.want, tc.asset)
			}
		})
	}
}

func TestFromCDN(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, func(c *Config) {
		c.CDNHeader = "CDN-Loop"
		c.CDNHeaderValue = "edge"
		c.CDNSources = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("2001:db8::/32")}
	})
	hdr := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	tests := []struct {
		name   string
		addr   string
		header map[string]string
		want   bool
	}{
		{"source range", "10.20.3.4", nil, true},
		{"v4-mapped source", "::ffff:10.20.3.4", nil, true},
		{"v6 source", "2001:db8::1", nil, true},
		{"user", "192.0.2.1", nil, false},
		{"header with value", "192.0.2.1", map[string]string{"CDN-Loop": "My-Edge; loops=1"}, true},
		{"header with other value", "192.0.2.1", map[string]string{"CDN-Loop": "other"}, false},
		{"no address", "", nil, false},
	}
	for _, tc := range tests {
		var a netip.Addr
		if tc.addr != "" {
			a = netip.MustParseAddr(tc.addr)
		}
		if got := r.FromCDN(a, hdr(tc.header)); got != tc.want {
			t.Errorf("%s: FromCDN = %v", tc.name, got)
		}
	}
	any := testRewriter(t, func(c *Config) { c.CDNHeader = "X-From-CDN" })
	if !any.FromCDN(netip.Addr{}, hdr(map[string]string{"X-From-CDN": "1"})) || any.FromCDN(netip.Addr{}, nil) {
		t.Error("CDNHeader without a value: presence must be enough")
	}
}

func TestCollector(t *testing.T) {
	t.Parallel()
	a := testRewriter(t, func(c *Config) { c.Route = "a" })
	b := testRewriter(t, func(c *Config) { c.Route = "b" })
	page, _ := url.Parse("https://www.example.test/")
	if _, err := a.Rewrite(&strings.Builder{}, strings.NewReader(checkPage), page, "text/html"); err != nil {
		t.Fatal(err)
	}
	a.RecordAsset(true, 900)
	a.RecordAsset(false, 100)
	b.RecordAsset(true, 10)

	c := NewCollector()
	c.Set(a)
	c.Set(b)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	series := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			series++
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				got[key] = m.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"scaleout_cdn_asset_bytes_total,route=a,source=cdn":       900,
		"scaleout_cdn_asset_bytes_total,route=a,source=direct":    100,
		"scaleout_cdn_asset_bytes_total,route=b,source=cdn":       10,
		"scaleout_cdn_asset_requests_total,route=a,source=direct": 1,
		"scaleout_cdn_offload_ratio,route=a":                      0.9,
		"scaleout_cdn_offload_ratio,route=b":                      1,
		"scaleout_cdn_references_rewritten_total,route=a":         6,
		"scaleout_cdn_references_rewritten_total,route=b":         0,
		"scaleout_cdn_bodies_rewritten_total,route=a,type=html":   1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if series != 18 {
		t.Errorf("%d series, want 18", series)
	}
	c.Remove("b")
	if st := c.Stats(); len(st) != 1 || st[0].Route != "a" || st[0].HTMLPages != 1 || st[0].CDNRequests != 1 {
		t.Errorf("Stats after Remove = %+v", st)
	}
}

func TestVersionMap(t *testing.T) {
	t.Parallel()
	var vm VersionMap
	vm.MaxEntries = 2
	vm.Set("/a.png", ETagVersion(`W/"abc"`))
	vm.Set("/b.css", ContentVersion([]byte("body{}")))
	if v, ok := vm.Version("/a.png"); !ok || v == "" || v != ETagVersion(`W/"abc"`) || ETagVersion(`"abd"`) == v {
		t.Errorf("Version(/a.png) = %q, %v", v, ok)
	}
	if v, _ := vm.Version("/b.css"); len(v) != 12 {
		t.Errorf("content version %q", v)
	}
	vm.Set("/c.js", "1")
	if vm.Len() != 2 {
		t.Errorf("Len = %d, want bounded at 2", vm.Len())
	}
	vm.Set("/c.js", "")
	if _, ok := vm.Version("/c.js"); ok {
		t.Error("empty version did not forget the path")
	}
	// Used as the Versioner of a fingerprinting rewriter.
	var live VersionMap
	r := testRewriter(t, func(c *Config) { c.Fingerprint = true; c.Versioner = &live })
	page := "https://www.example.test/"
	if got, _ := rewriteString(t, r, page, "text/html", `<img src="/a.png">`); got != `<img src="https://cdn.test/a.png">` {
		t.Errorf("before the version is known: %s", got)
	}
	live.Set("/a.png", "k1")
	if got, _ := rewriteString(t, r, page, "text/html", `<img src="/a.png">`); got != `<img src="https://cdn.test/a.png?v=k1">` {
		t.Errorf("after: %s", got)
	}
	if h, _ := r.AssetHeaders("/a.png", "v=k1", ""); h.CacheControl != DefaultImmutableCacheControl {
		t.Errorf("versioned asset Cache-Control %q", h.CacheControl)
	}
}
