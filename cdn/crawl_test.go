package cdn

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// docSite is a real multi-page site that this project did not write: the
// HTML manual of the valgrind Debian package (40 pages, a stylesheet and
// images with relative references), which the Go machine images install.
// Elsewhere: apt-get install valgrind.
const docSite = "/usr/share/doc/valgrind/html"

func needDocSite(t *testing.T) []string {
	t.Helper()
	pages, _ := filepath.Glob(filepath.Join(docSite, "*.html"))
	if len(pages) < 10 {
		t.Fatalf("%s has %d pages: install the Debian package valgrind (apt-get install valgrind), whose HTML manual this test crawls", docSite, len(pages))
	}
	return pages
}

// originHandler plays the gateway in front of a static site: it rewrites
// HTML and CSS, and serves assets with the headers and counting that the
// gateway does when the CDN pulls from it.
func originHandler(t *testing.T, r *Rewriter, root string) http.Handler {
	files := http.FileServer(http.Dir(root))
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := httptest.NewRecorder()
		files.ServeHTTP(rec, req)
		res := rec.Result()
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		ct := res.Header.Get("Content-Type")
		body := io.Reader(res.Body)
		var buf bytes.Buffer
		if res.StatusCode == http.StatusOK && r.Rewritable(ct) {
			page := &url.URL{Scheme: "http", Host: req.Host, Path: req.URL.Path}
			if _, err := r.Rewrite(&buf, res.Body, page, ct); err != nil {
				t.Errorf("rewriting %s: %v", req.URL, err)
			}
			body = &buf
			w.Header().Del("Content-Length")
		}
		out := &countWriter{w: w}
		if h, ok := r.AssetHeaders(req.URL.Path, req.URL.RawQuery, req.Header.Get("Origin")); ok && res.StatusCode == http.StatusOK {
			w.Header().Set("Cache-Control", h.CacheControl)
			if h.AccessControlAllowOrigin != "" {
				w.Header().Set("Access-Control-Allow-Origin", h.AccessControlAllowOrigin)
			}
			defer func() {
				addr, _ := netip.ParseAddrPort(req.RemoteAddr)
				r.RecordAsset(r.FromCDN(addr.Addr(), req.Header.Get), out.n)
			}()
		}
		w.WriteHeader(res.StatusCode)
		_, _ = io.Copy(out, body)
	})
}

// TestCrawlDocSite serves a real documentation site through the rewriter,
// with a second server playing the CDN in front of it, and crawls it: every
// asset reference on every page must point at the CDN host and resolve
// there to the file on disk; nothing else may change.
func TestCrawlDocSite(t *testing.T) {
	pages := needDocSite(t)
	var r *Rewriter
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		originHandler(t, r, docSite).ServeHTTP(w, req)
	}))
	defer origin.Close()
	originURL := mustURL(t, origin.URL)
	proxy := httputil.NewSingleHostReverseProxy(originURL)
	cdnSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.Header.Set("X-From-CDN", "test-edge")
		proxy.ServeHTTP(w, req)
	}))
	defer cdnSrv.Close()
	var err error
	r, err = New(Config{Route: "docs", Host: cdnSrv.URL, Origins: []string{origin.URL}, CDNHeader: "X-From-CDN"})
	if err != nil {
		t.Fatal(err)
	}

	get := func(u string) ([]byte, http.Header) {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
		}
		return b, resp.Header
	}
	checked := map[string]bool{}
	checkAsset := func(pageName, ref string) {
		t.Helper()
		if !strings.HasPrefix(ref, cdnSrv.URL+"/") {
			t.Errorf("%s: asset reference %q does not point at the CDN host %s", pageName, ref, cdnSrv.URL)
			return
		}
		if checked[ref] {
			return
		}
		checked[ref] = true
		got, hdr := get(ref)
		rel := strings.TrimPrefix(mustURL(t, ref).Path, "/")
		want, err := os.ReadFile(filepath.Join(docSite, filepath.FromSlash(rel)))
		if err != nil {
			t.Errorf("%s: %s maps to %s, which does not exist: %v", pageName, ref, rel, err)
			return
		}
		if strings.HasSuffix(rel, ".css") {
			// A stylesheet pulled by the CDN is rewritten in turn; undo that.
			got = bytes.ReplaceAll(got, []byte(cdnSrv.URL+"/"), nil)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %s through the CDN differs from %s", pageName, ref, rel)
		}
		if cc := hdr.Get("Cache-Control"); cc != DefaultCacheControl {
			t.Errorf("%s: Cache-Control %q, want %q", ref, cc, DefaultCacheControl)
		}
	}

	var refs int
	for _, p := range pages {
		name := filepath.Base(p)
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := get(origin.URL + "/" + name)
		// Nothing but the references changed: undoing the rewrite gives
		// back the file byte for byte.
		if back := bytes.ReplaceAll(body, []byte(cdnSrv.URL+"/"), nil); !bytes.Equal(back, orig) {
			t.Errorf("%s: un-rewriting does not give back the original page", name)
		}
		z := html.NewTokenizer(bytes.NewReader(body))
		for {
			tt := z.Next()
			if tt == html.ErrorToken {
				break
			}
			if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
				continue
			}
			tok := z.Token()
			attr := map[string]string{}
			for _, a := range tok.Attr {
				attr[a.Key] = a.Val
			}
			var assets []string
			switch tok.Data {
			case "img", "script", "source", "video", "audio", "input", "embed":
				if v, ok := attr["src"]; ok {
					assets = append(assets, v)
				}
			case "link":
				if rel := strings.ToLower(attr["rel"]); strings.Contains(rel, "stylesheet") || strings.Contains(rel, "icon") {
					assets = append(assets, attr["href"])
				}
			case "a":
				// Links to pages stay on the origin.
				if h := attr["href"]; strings.HasPrefix(h, cdnSrv.URL) {
					t.Errorf("%s: page link %q was rewritten", name, h)
				}
			}
			for _, ref := range assets {
				if strings.HasPrefix(ref, "data:") || strings.Contains(ref, "valgrind.org") {
					continue
				}
				refs++
				checkAsset(name, ref)
			}
		}
	}
	t.Logf("crawled %d pages, %d asset references, %d distinct assets", len(pages), refs, len(checked))
	if refs < 100 || len(checked) < 5 {
		t.Errorf("only %d references to %d assets found: the crawl did not see the site", refs, len(checked))
	}
	s := r.Stats()
	if s.CDNRequests != int64(len(checked)) || s.DirectRequests != 0 || s.OffloadRatio != 1 {
		t.Errorf("stats after the crawl: %+v", s)
	}
	if s.References < int64(refs) {
		t.Errorf("rewriter counted %d references, the crawl saw %d", s.References, refs)
	}
	// A user fetching an asset from the origin directly is an offload miss.
	b, _ := get(origin.URL + "/vg_basic.css")
	s2 := r.Stats()
	if s2.DirectRequests != 1 || s2.DirectBytes != int64(len(b)) || s2.OffloadRatio >= 1 {
		t.Errorf("direct request not counted: %+v", s2)
	}
	t.Logf("offload ratio after one direct request: %s", strconv.FormatFloat(s2.OffloadRatio, 'f', 3, 64))
}
