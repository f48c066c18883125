package cdn

import (
	"bytes"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
)

const testCDN = "https://cdn.test"

func testRewriter(t testing.TB, mod func(*Config)) *Rewriter {
	t.Helper()
	cfg := Config{Route: "test", Host: testCDN, Origins: []string{"https://www.example.test", "http://127.0.0.1:8080"}}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func rewriteString(t testing.TB, r *Rewriter, page, contentType, in string) (string, Result) {
	t.Helper()
	var b bytes.Buffer
	res, err := r.Rewrite(&b, strings.NewReader(in), mustURL(t, page), contentType)
	if err != nil {
		t.Fatalf("Rewrite: %v", err)
	}
	return b.String(), res
}

func TestRewriteHTMLTable(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, nil)
	const page = "https://www.example.test/dir/page.html"
	tests := []struct {
		name, in, want string
	}{
		{"root-relative src", `<img src="/a.png">`, `<img src="https://cdn.test/a.png">`},
		{"relative src resolves against page", `<img src="img/a.png">`, `<img src="https://cdn.test/dir/img/a.png">`},
		{"dot segments", `<img src="../up/./a.png">`, `<img src="https://cdn.test/up/a.png">`},
		{"srcset keeps descriptors", `<img srcset="a.png 1x, /b.png 2x,c.png 480w, https://other.test/d.png 3x">`,
			`<img srcset="https://cdn.test/dir/a.png 1x, https://cdn.test/b.png 2x,https://cdn.test/dir/c.png 480w, https://other.test/d.png 3x">`},
		{"srcset comma inside URL and no descriptor", `<img srcset="/i,mg.png 1x,/b.png">`, `<img srcset="https://cdn.test/i,mg.png 1x,https://cdn.test/b.png">`},
		{"srcset with a data: candidate", `<img srcset="data:image/png;base64,AA,BB 1x, /b.png 2x">`, `<img srcset="data:image/png;base64,AA,BB 1x, https://cdn.test/b.png 2x">`},
		{"srcset descriptor with parentheses", `<img srcset="/a.png (max-width: 1px, x) 1x, /b.png 2x">`, `<img srcset="https://cdn.test/a.png (max-width: 1px, x) 1x, https://cdn.test/b.png 2x">`},
		{"srcset newlines", "<img srcset=\"/a.png 1x,\n  /b.png 2x\">", "<img srcset=\"https://cdn.test/a.png 1x,\n  https://cdn.test/b.png 2x\">"},
		{"uppercase tag and attribute", `<IMG SRC="/A.PNG">`, `<IMG SRC="https://cdn.test/A.PNG">`},
		{"unquoted attributes", `<img src=/a.png alt=x>`, `<img src=https://cdn.test/a.png alt=x>`},
		{"unquoted value before >", `<img alt=x src=/a.png>`, `<img alt=x src=https://cdn.test/a.png>`},
		{"single quotes and order kept", `<img alt='x' SRC='/a.png' data-x=1 >`, `<img alt='x' SRC='https://cdn.test/a.png' data-x=1 >`},
		{"white space around value kept", `<img src = "  /a.png  ">`, `<img src = "  https://cdn.test/a.png  ">`},
		{"self-closing", `<img src="/a.png"/>`, `<img src="https://cdn.test/a.png"/>`},
		{"entity in query kept", `<img src="/a.png?x=1&amp;y=2">`, `<img src="https://cdn.test/a.png?x=1&amp;y=2">`},
		{"bare ampersand kept", `<img src="/a.png?x=1&copy=2">`, `<img src="https://cdn.test/a.png?x=1&copy=2">`},
		{"entity-encoded path", `<img src="&#x2F;a.png">`, `<img src="https://cdn.test/a.png">`},
		{"duplicate attribute: first wins", `<img src="/a.png" src="/b.png">`, `<img src="https://cdn.test/a.png" src="/b.png">`},
		{"base href", `<base href="/assets/"><img src="x.png">`, `<base href="/assets/"><img src="https://cdn.test/assets/x.png">`},
		{"external base href", `<base href="https://other.test/"><img src="x.png"><img src="https://www.example.test/y.png">`,
			`<base href="https://other.test/"><img src="x.png"><img src="https://cdn.test/y.png">`},
		{"first base wins", `<base href="/a/"><base href="/b/"><img src="x.png">`, `<base href="/a/"><base href="/b/"><img src="https://cdn.test/a/x.png">`},
		{"absolute origin URLs", `<img src="http://127.0.0.1:8080/a.png"><img src="//www.example.test/b.png"><img src="https://WWW.example.test:443/c.png">`,
			`<img src="https://cdn.test/a.png"><img src="https://cdn.test/b.png"><img src="https://cdn.test/c.png">`},
		{"other scheme of an origin host", `<img src="http://www.example.test/a.png">`, `<img src="http://www.example.test/a.png">`},
		{"untouched schemes and fragments", `<img src="data:image/png;base64,AAAA"><img src="blob:https://www.example.test/x.png"><img src="javascript:x.png"><img src="#x.png"><img src="mailto:a.png">`,
			`<img src="data:image/png;base64,AAAA"><img src="blob:https://www.example.test/x.png"><img src="javascript:x.png"><img src="#x.png"><img src="mailto:a.png">`},
		{"external host untouched", `<img src="https://other.test/a.png">`, `<img src="https://other.test/a.png">`},
		{"already on the CDN", `<img src="https://cdn.test/a.png">`, `<img src="https://cdn.test/a.png">`},
		{"not an asset", `<img src="/page.html"><script src="/api/data"></script>`, `<img src="/page.html"><script src="/api/data"></script>`},
		{"prefix pattern", `<img src="/static/blob">`, `<img src="https://cdn.test/static/blob">`},
		{"query and fragment kept", `<img src="/a.png?v=3#frag">`, `<img src="https://cdn.test/a.png?v=3#frag">`},
		{"script src rewritten, content not", `<script src="/app.js"></script><script>var u = "/static/in-script.png"; x = '<img src="/a.png">';</script>`,
			`<script src="https://cdn.test/app.js"></script><script>var u = "/static/in-script.png"; x = '<img src="/a.png">';</script>`},
		{"textarea untouched", `<textarea><img src="/a.png"></textarea><img src="/b.png">`, `<textarea><img src="/a.png"></textarea><img src="https://cdn.test/b.png">`},
		{"title untouched", `<title><img src="/a.png"></title>`, `<title><img src="/a.png"></title>`},
		{"pre untouched", `<pre><img src="/a.png"><PRE><img src="/b.png"></PRE><img src="/c.png"></pre><img src="/d.png">`,
			`<pre><img src="/a.png"><PRE><img src="/b.png"></PRE><img src="/c.png"></pre><img src="https://cdn.test/d.png">`},
		{"listing untouched, and only until its end", `<listing><img src="/a.png"></listing ><img src="/b.png"><pre/><img src="/c.png"></pre	><img src="/d.png">`,
			`<listing><img src="/a.png"></listing ><img src="https://cdn.test/b.png"><pre/><img src="/c.png"></pre	><img src="https://cdn.test/d.png">`},
		{"comments untouched", `<!-- <img src="/a.png"> --><!--[if IE]><link rel=stylesheet href="/ie.css"><![endif]--><img src="/b.png">`,
			`<!-- <img src="/a.png"> --><!--[if IE]><link rel=stylesheet href="/ie.css"><![endif]--><img src="https://cdn.test/b.png">`},
		{"link rels", `<link rel="icon" href="/favicon.ico"><link rel="Preload" href="/f.woff2" as="font"><link rel="canonical" href="/x.css"><link rel="alternate stylesheet" href="/alt.css">`,
			`<link rel="icon" href="https://cdn.test/favicon.ico"><link rel="Preload" href="https://cdn.test/f.woff2" as="font"><link rel="canonical" href="/x.css"><link rel="alternate stylesheet" href="https://cdn.test/alt.css">`},
		{"href on rel after href", `<link href="/s.css" rel=stylesheet>`, `<link href="https://cdn.test/s.css" rel=stylesheet>`},
		{"anchors untouched", `<a href="/x.png">x</a><area href="/y.png">`, `<a href="/x.png">x</a><area href="/y.png">`},
		{"og:image", `<meta property="og:image" content="https://www.example.test/og.png"><meta name="description" content="/x.png">`,
			`<meta property="og:image" content="https://cdn.test/og.png"><meta name="description" content="/x.png">`},
		{"video, poster, source", `<video poster="/p.jpg" src="/v.webm"><source src="/v.mp4" type="video/mp4"><track src="/t.vtt"></video>`,
			`<video poster="https://cdn.test/p.jpg" src="https://cdn.test/v.webm"><source src="https://cdn.test/v.mp4" type="video/mp4"><track src="/t.vtt"></video>`},
		{"picture source srcset", `<picture><source srcset="/a.webp" type="image/webp"><img src="/a.jpg"></picture>`,
			`<picture><source srcset="https://cdn.test/a.webp" type="image/webp"><img src="https://cdn.test/a.jpg"></picture>`},
		{"inline SVG use and image", `<svg><use href="/sprite.svg#icon"></use><image xlink:href="/i.png" x="0"/><a href="/z.svg">z</a></svg>`,
			`<svg><use href="https://cdn.test/sprite.svg#icon"></use><image xlink:href="https://cdn.test/i.png" x="0"/><a href="/z.svg">z</a></svg>`},
		{"style attribute with entity quotes", `<div style="background: url(&quot;/a.png&quot;)">`, `<div style="background: url(&quot;https://cdn.test/a.png&quot;)">`},
		{"style attribute single quotes", `<div style='background:url("/a.png") , url(b.png)'>`, `<div style='background:url("https://cdn.test/a.png") , url(https://cdn.test/dir/b.png)'>`},
		{"style attribute unquoted", `<div style=background:url(/a.png)>`, `<div style=background:url(https://cdn.test/a.png)>`},
		{"style block", `<style>@import "x.css"; .a{background:url( '../b.png' )} /* url(/c.png) */ .b{content:"url(/d.png)"}</style>`,
			`<style>@import "https://cdn.test/dir/x.css"; .a{background:url( 'https://cdn.test/b.png' )} /* url(/c.png) */ .b{content:"url(/d.png)"}</style>`},
		{"style block inside pre untouched", `<pre><style>a{b:url(/a.png)}</style></pre>`, `<pre><style>a{b:url(/a.png)}</style></pre>`},
		{"noscript fallback rewritten", `<noscript><img src="/a.png"><script>"/b.png"</script></noscript><img src="/c.png">`,
			`<noscript><img src="https://cdn.test/a.png"><script>"/b.png"</script></noscript><img src="https://cdn.test/c.png">`},
		{"integrity without crossorigin untouched", `<script src="/app.js" integrity="sha384-x"></script><link rel=stylesheet href=/s.css integrity=sha384-y>`,
			`<script src="/app.js" integrity="sha384-x"></script><link rel=stylesheet href=/s.css integrity=sha384-y>`},
		{"integrity with crossorigin rewritten", `<script src="/app.js" integrity="sha384-x" crossorigin></script>`,
			`<script src="https://cdn.test/app.js" integrity="sha384-x" crossorigin></script>`},
		{"preload imagesrcset", `<link rel=preload as=image href="/a.png" imagesrcset="/a.png 1x, /a2.png 2x">`,
			`<link rel=preload as=image href="https://cdn.test/a.png" imagesrcset="https://cdn.test/a.png 1x, https://cdn.test/a2.png 2x">`},
		{"non-ASCII space kept", "<img src=\"\u00a0/a.png\">", "<img src=\"https://cdn.test/dir/%C2%A0/a.png\">"},
		{"legacy background attribute", `<body background="/bg.gif"><td BACKGROUND=cell.png>`, `<body background="https://cdn.test/bg.gif"><td BACKGROUND=https://cdn.test/dir/cell.png>`},
		{"iframe src untouched", `<iframe src="/static/w.html"></iframe>`, `<iframe src="/static/w.html"></iframe>`},
		{"lazy-load data attributes", `<img data-src="/a.png" data-srcset="/b.png 2x">`, `<img data-src="https://cdn.test/a.png" data-srcset="https://cdn.test/b.png 2x">`},
		{"newline inside tag", "<img\nsrc=\"/a.png\"\n\talt=\"x\">", "<img\nsrc=\"https://cdn.test/a.png\"\n\talt=\"x\">"},
		{"equals sign at attribute start", `<img =x src="/a.png">`, `<img =x src="https://cdn.test/a.png">`},
		{"malformed tag at EOF kept", `<img src="/a.png`, `<img src="/a.png`},
		{"stray less-than", `a < b <img src=/a.png> c<`, `a < b <img src=https://cdn.test/a.png> c<`},
		{"doctype and CDATA-like kept", `<!DOCTYPE html><![CDATA[<img src="/a.png">]]>`, `<!DOCTYPE html><![CDATA[<img src="/a.png">]]>`},
		{"unquoted rewritten value needing quotes", `<img src=/a.png?x=y&amp;z>`, `<img src=https://cdn.test/a.png?x=y&amp;z>`},
		{"quote in URL escaped", `<img src='/a&#39;b.png'>`, `<img src='https://cdn.test/a&#39;b.png'>`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, _ := rewriteString(t, r, page, "text/html", tc.in)
			if got != tc.want {
				t.Errorf("rewrite\n in: %s\ngot: %s\nwant %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestRewriteCSSTable(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, nil)
	const page = "https://www.example.test/css/site.css"
	tests := []struct {
		name, in, want string
	}{
		{"bare url", `a{background:url(img/a.png)}`, `a{background:url(https://cdn.test/css/img/a.png)}`},
		{"quoted urls", `a{b:url("/a.png");c:url('/b.png')}`, `a{b:url("https://cdn.test/a.png");c:url('https://cdn.test/b.png')}`},
		{"URL() uppercase and spaces", `a{b:URL(  /a.png  )}`, `a{b:URL(  https://cdn.test/a.png  )}`},
		{"import forms", `@import "b.css";@import url(c.css) screen;@IMPORT 'd.css';@import url("/e.css");@import'/f.css';`,
			`@import "https://cdn.test/css/b.css";@import url(https://cdn.test/css/c.css) screen;@IMPORT 'https://cdn.test/css/d.css';@import url("https://cdn.test/e.css");@import'https://cdn.test/f.css';`},
		{"not an import", `@imports "b.css"; @media "b.css"`, `@imports "b.css"; @media "b.css"`},
		{"escaped quote in string", `a{b:url("a\"b.png")}`, `a{b:url("https://cdn.test/css/a%22b.png")}`},
		{"escaped space in bare url", `a{b:url(a\ b.png)}`, `a{b:url(https://cdn.test/css/a%20b.png)}`},
		{"hex escape", `a{b:url(\2f a.png)}`, `a{b:url(https://cdn.test/a.png)}`},
		{"comments untouched", `/* url(a.png) @import "x.css"; */a{b:url(/c.png)}`, `/* url(a.png) @import "x.css"; */a{b:url(https://cdn.test/c.png)}`},
		{"strings untouched", `a{content:"url(a.png)";b:'@import "x.css"'}`, `a{content:"url(a.png)";b:'@import "x.css"'}`},
		{"other functions untouched", `a{b:myurl(a.png);c:--url(b.png)}`, `a{b:myurl(a.png);c:--url(b.png)}`},
		{"data and external untouched", `a{b:url(data:image/png;base64,AA==);c:url(https://other.test/a.png);d:url()}`,
			`a{b:url(data:image/png;base64,AA==);c:url(https://other.test/a.png);d:url()}`},
		{"font with format", `@font-face{src:url(f.woff2) format("woff2"),url(f.woff) format("woff")}`,
			`@font-face{src:url(https://cdn.test/css/f.woff2) format("woff2"),url(https://cdn.test/css/f.woff) format("woff")}`},
		{"bad url kept", `a{b:url(a"b.png)}c{d:url(/e.png)}`, `a{b:url(a"b.png)}c{d:url(https://cdn.test/e.png)}`},
		{"unterminated url at EOF", `a{b:url(/x.png`, `a{b:url(https://cdn.test/x.png`},
		{"unterminated string at EOF", `a{b:url("/x.png`, `a{b:url("https://cdn.test/x.png`},
		{"newline ends string", "a{b:url(\"/x.png\n)} c{d:url(/y.png)}", "a{b:url(\"/x.png\n)} c{d:url(https://cdn.test/y.png)}"},
		{"not an asset", `a{b:url(/api/x)}`, `a{b:url(/api/x)}`},
		{"image-set strings", `a{b:image-set("x.png" 1x, 'x2.png' 2x);c:-webkit-image-set(url(y.png) 1x, "y2.png" 2x)}`,
			`a{b:image-set("https://cdn.test/css/x.png" 1x, 'https://cdn.test/css/x2.png' 2x);c:-webkit-image-set(url(https://cdn.test/css/y.png) 1x, "https://cdn.test/css/y2.png" 2x)}`},
		{"image-set type() strings untouched", `a{b:image-set("x.avif" type("image/avif.png"), "x.jpg" type("image/jpeg"))}`,
			`a{b:image-set("https://cdn.test/css/x.avif" type("image/avif.png"), "https://cdn.test/css/x.jpg" type("image/jpeg"))}`},
		{"strings after image-set untouched", `a{b:image-set("x.png" 1x) "z.png"; content:"w.png"} c{d:myimage-set("v.png")}`,
			`a{b:image-set("https://cdn.test/css/x.png" 1x) "z.png"; content:"w.png"} c{d:myimage-set("v.png")}`},
		{"escape before u", `a{b:\url(/x.png)}`, `a{b:\url(/x.png)}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, _ := rewriteString(t, r, page, "text/css; charset=utf-8", tc.in)
			if got != tc.want {
				t.Errorf("rewrite\n in: %s\ngot: %s\nwant %s", tc.in, got, tc.want)
			}
			// The same result whatever the chunking.
			var b bytes.Buffer
			w := r.NewWriter(&b, mustURL(t, page), "text/css")
			for i := 0; i < len(tc.in); i++ {
				if _, err := w.Write([]byte{tc.in[i]}); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("byte-by-byte rewrite\ngot: %s\nwant %s", b.String(), tc.want)
			}
		})
	}
}

// checkPage and checkCSS are the page and stylesheet of the gateway's
// acceptance check (shared/checks/cdn).
const checkPage = `<!DOCTYPE html><html><head><link rel="stylesheet" href="/static/site.css">
<link rel=preload href='/fonts/a.woff2' as=font></head><body>
<img src="/img/logo.png" srcset="/img/logo-1x.png 1x, /img/logo-2x.png 2x" alt="x">
<div style="background:url('/img/bg.jpg')">t</div>
<a href="/about">about</a><img src="https://elsewhere.example.org/a.png"><img src="data:image/png;base64,AAAA">
<script>var u = "/static/in-script.png";</script></body></html>`

const checkCSS = `body{background:url(/img/b.png)} @import url('/static/more.css');`

// TestAcceptanceCheckPage pins the exact output the gateway's acceptance
// check expects, with the configuration.
func TestAcceptanceCheckPage(t *testing.T) {
	t.Parallel()
	r, err := New(Config{
		Host:     "http://cdn.localhost:8081",
		Origins:  []string{"http://127.0.0.1:8080", "https://www.example.test"},
		Patterns: []string{"*.css", "*.js", "*.png", "*.jpg", "*.webp", "*.svg", "*.woff2", "/static/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, res := rewriteString(t, r, "http://127.0.0.1:8080/page", "text/html; charset=utf-8", checkPage)
	want := strings.NewReplacer(
		`"/static/site.css"`, `"http://cdn.localhost:8081/static/site.css"`,
		`'/fonts/a.woff2'`, `'http://cdn.localhost:8081/fonts/a.woff2'`,
		`"/img/logo.png"`, `"http://cdn.localhost:8081/img/logo.png"`,
		`"/img/logo-1x.png 1x, /img/logo-2x.png 2x"`, `"http://cdn.localhost:8081/img/logo-1x.png 1x, http://cdn.localhost:8081/img/logo-2x.png 2x"`,
		`'/img/bg.jpg'`, `'http://cdn.localhost:8081/img/bg.jpg'`,
	).Replace(checkPage)
	if got != want {
		t.Errorf("check page:\ngot:  %s\nwant: %s", got, want)
	}
	if res.References != 6 {
		t.Errorf("References = %d, want 6", res.References)
	}
	for _, keep := range []string{`href="/about"`, "https://elsewhere.example.org/a.png", "data:image/png;base64,AAAA", `"/static/in-script.png"`} {
		if !strings.Contains(got, keep) {
			t.Errorf("%s was changed", keep)
		}
	}
	gotCSS, _ := rewriteString(t, r, "http://127.0.0.1:8080/static/site.css", "text/css", checkCSS)
	if want := `body{background:url(http://cdn.localhost:8081/img/b.png)} @import url('http://cdn.localhost:8081/static/more.css');`; gotCSS != want {
		t.Errorf("check CSS:\ngot:  %s\nwant: %s", gotCSS, want)
	}
}

func TestRewriteNotRewritable(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, nil)
	in := `<img src="/a.png">`
	for _, ct := range []string{"application/json", "text/plain", "", "image/png"} {
		got, _ := rewriteString(t, r, "https://www.example.test/", ct, in)
		if got != in {
			t.Errorf("%q: body changed to %q", ct, got)
		}
		if r.Rewritable(ct) {
			t.Errorf("Rewritable(%q) = true", ct)
		}
	}
	for _, ct := range []string{"text/html", "TEXT/HTML; charset=UTF-8", "text/css", "text/css;charset=utf-8"} {
		if !r.Rewritable(ct) {
			t.Errorf("Rewritable(%q) = false", ct)
		}
	}
}

func TestRewriteNilAndHostlessPage(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, nil)
	in := `<img src="a.png"><img src="https://www.example.test/b.png"><img src="//elsewhere.test/c.png">`
	want := `<img src="https://cdn.test/a.png"><img src="https://cdn.test/b.png"><img src="//elsewhere.test/c.png">`
	var b bytes.Buffer
	if _, err := r.Rewrite(&b, strings.NewReader(in), nil, "text/html"); err != nil {
		t.Fatal(err)
	}
	if b.String() != want {
		t.Errorf("nil page: got %s", b.String())
	}
	got, _ := rewriteString(t, r, "/dir/x", "text/html", `<img src="a.png">`)
	if got != `<img src="https://cdn.test/dir/a.png">` {
		t.Errorf("hostless page: got %s", got)
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	versions := map[string]string{"/a.png": "abc123", "/b.css": "W/\"e t\"", "/sprite.svg": "s1"}
	r := testRewriter(t, func(c *Config) {
		c.Fingerprint = true
		c.Versioner = VersionerFunc(func(p string) (string, bool) { v, ok := versions[p]; return v, ok })
	})
	in := `<img src="/a.png"><img src="/a.png?x=1&amp;y=2"><link rel=stylesheet href=/b.css><img src="/unknown.png"><use href="/sprite.svg#i"/><img src="/a.png?v=old">`
	want := `<img src="https://cdn.test/a.png?v=abc123"><img src="https://cdn.test/a.png?x=1&amp;y=2&amp;v=abc123"><link rel=stylesheet href=https://cdn.test/b.css?v=W%2F%22e+t%22><img src="https://cdn.test/unknown.png"><use href="https://cdn.test/sprite.svg?v=s1#i"/><img src="https://cdn.test/a.png?v=old">`
	got, _ := rewriteString(t, r, "https://www.example.test/", "text/html", in)
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestWriterMatchesRewrite(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, nil)
	page := mustURL(t, "https://www.example.test/dir/")
	in := strings.Repeat(`<p>text <img src="a.png" srcset="b.png 2x"><style>a{b:url(c.png)}</style><script>"/x.png"</script>`+"\n", 500)
	var want bytes.Buffer
	res, err := r.Rewrite(&want, strings.NewReader(in), page, "text/html")
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{1, 7, 4096} {
		var got bytes.Buffer
		w := r.NewWriter(&got, page, "text/html")
		for p := in; p != ""; {
			n := min(chunk, len(p))
			if _, err := w.Write([]byte(p[:n])); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Fatalf("chunk %d: Writer output differs from Rewrite", chunk)
		}
		if w.Result().References != res.References || res.References != 1500 {
			t.Errorf("chunk %d: references %d, Rewrite %d, want 1500", chunk, w.Result().References, res.References)
		}
		if w.Result().BytesIn != int64(len(in)) || w.Result().BytesOut != int64(want.Len()) {
			t.Errorf("chunk %d: bytes in/out %d/%d", chunk, w.Result().BytesIn, w.Result().BytesOut)
		}
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWriteErrors(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, nil)
	boom := errors.New("boom")
	big := strings.Repeat(`<img src="/a.png">`, 10000)
	t.Run("dst error from Rewrite", func(t *testing.T) {
		_, err := r.Rewrite(failWriter{boom}, strings.NewReader(big), nil, "text/html")
		if !errors.Is(err, boom) {
			t.Errorf("err = %v, want boom", err)
		}
	})
	t.Run("dst error from Writer unblocks writes", func(t *testing.T) {
		w := r.NewWriter(failWriter{boom}, nil, "text/html")
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = w.Write([]byte(big))
		}
		if err == nil {
			t.Fatal("writes kept succeeding after dst failed")
		}
		if cerr := w.Close(); !errors.Is(cerr, boom) {
			t.Errorf("Close = %v, want boom", cerr)
		}
		if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
			t.Errorf("Write after Close = %v", err)
		}
	})
	t.Run("src error", func(t *testing.T) {
		_, err := r.Rewrite(io.Discard, iotest.ErrReader(boom), nil, "text/html")
		if !errors.Is(err, boom) {
			t.Errorf("err = %v, want boom", err)
		}
		_, err = r.Rewrite(io.Discard, iotest.ErrReader(boom), nil, "text/css")
		if !errors.Is(err, boom) {
			t.Errorf("css err = %v, want boom", err)
		}
	})
	t.Run("one-byte reads", func(t *testing.T) {
		var b bytes.Buffer
		if _, err := r.Rewrite(&b, iotest.OneByteReader(strings.NewReader(checkPage)), nil, "text/html"); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), testCDN+"/img/logo-2x.png 2x") {
			t.Errorf("one-byte reads: not rewritten: %s", b.String())
		}
	})
}
