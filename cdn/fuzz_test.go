package cdn

import (
	"bytes"
	"fmt"
	"io"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

var fuzzSeeds = []string{
	checkPage,
	`<img src="/a.png" srcset="a.png 1x, /b.png 2x">`,
	`<IMG SRC=/A.PNG ALT=x><img src="/a.png?x=1&amp;y=2">`,
	`<base href="/x/"><img src=a.png><link rel=stylesheet href=s.css>`,
	`<style>a{b:url("/a\"b.png")} @import 'x.css';</style><div style="x:url(&quot;/y.png&quot;)">`,
	`<script>"<img src=/a.png>"</script><textarea><img src=/a.png></textarea><pre><img src=/a.png></pre><!-- <img src=/a.png> -->`,
	`<svg><use href="/s.svg#i"/><image xlink:href="/i.png"/></svg>`,
	`<meta property=og:image content=/og.png><video poster=/p.jpg><source src=/v.mp4></video>`,
	`<img =x src='/a.png' src="/b.png"/><p a=b/>`,
	`<img src="/a.png`, `<!--`, `<!DOCTYPE`, `</`, `<?x`, `<a b='`, "<img src=\"/a\x00.png\">", "<img src=\"/a\r\n.png\">",
}

// tokens tokenizes s into a comparable list, decoding what a browser would.
func tokens(s string) []html.Token {
	z := html.NewTokenizer(strings.NewReader(s))
	var out []html.Token
	for {
		if z.Next() == html.ErrorToken {
			return out
		}
		out = append(out, z.Token())
	}
}

// sameTokens checks that out tokenizes like in, except for attribute values
// and style text that now point at the CDN host.
func sameTokens(t *testing.T, in, out string) {
	t.Helper()
	a, b := tokens(in), tokens(out)
	if len(a) != len(b) {
		t.Fatalf("token count %d became %d\n in: %q\nout: %q", len(a), len(b), in, out)
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Data != y.Data && !(x.Type == html.TextToken && strings.Contains(y.Data, testCDN)) {
			t.Fatalf("token %d: %v %q became %v %q\n in: %q\nout: %q", i, x.Type, x.Data, y.Type, y.Data, in, out)
		}
		if len(x.Attr) != len(y.Attr) {
			t.Fatalf("token %d: attributes %v became %v", i, x.Attr, y.Attr)
		}
		for j := range x.Attr {
			if x.Attr[j].Key != y.Attr[j].Key || x.Attr[j].Val != y.Attr[j].Val && !strings.Contains(y.Attr[j].Val, testCDN) {
				t.Fatalf("token %d: attribute %v became %v\n in: %q\nout: %q", i, x.Attr[j], y.Attr[j], in, out)
			}
		}
	}
}

// checkScanner checks that scanTag finds exactly the attributes that the
// tokenizer does, for every start tag of s.
func checkScanner(t *testing.T, s string) {
	t.Helper()
	z := html.NewTokenizer(strings.NewReader(s))
	h := &htmlRewriter{}
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			return
		}
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		raw := append([]byte(nil), z.Raw()...)
		name, attrs, ok := scanTag(raw, nil)
		if !ok {
			t.Fatalf("scanTag rejected a tag the tokenizer read: %q", raw)
		}
		tn, _ := z.TagName()
		if !eqFoldBytes(tn, name) && !bytes.Contains(raw, []byte{0}) {
			t.Fatalf("scanTag name %q, tokenizer %q", name, tn)
		}
		var got []string
		for _, a := range attrs {
			got = append(got, fmt.Sprintf("%s=%q", asciiLower(raw[a.k0:a.k1]), h.attrValue(raw, a)))
		}
		var want []string
		for more := true; more; {
			var k, v []byte
			k, v, more = z.TagAttr()
			if k != nil {
				want = append(want, fmt.Sprintf("%s=%q", k, v))
			}
		}
		if strings.Join(got, " ") != strings.Join(want, " ") && !bytes.Contains(raw, []byte{0}) {
			t.Fatalf("attributes of %q:\nscanTag:   %v\ntokenizer: %v", raw, got, want)
		}
	}
}

func FuzzRewriteHTML(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	r := testRewriter(f, nil)
	none := testRewriter(f, func(c *Config) { c.Patterns = []string{"*.never-matches"}; c.MaxTokenSize = 64 })
	page := mustURL(f, "https://www.example.test/dir/page.html")
	f.Fuzz(func(t *testing.T, in string) {
		// Nothing matches: the output is the input, byte for byte, even
		// with a tiny token limit.
		var b bytes.Buffer
		if _, err := none.Rewrite(&b, strings.NewReader(in), page, "text/html"); err != nil {
			t.Fatal(err)
		}
		if b.String() != in {
			t.Fatalf("unchanged page changed:\n in: %q\nout: %q", in, b.String())
		}
		b.Reset()
		res, err := r.Rewrite(&b, strings.NewReader(in), page, "text/html")
		if err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if res.References == 0 && out != in {
			t.Fatalf("no reference rewritten but output changed:\n in: %q\nout: %q", in, out)
		}
		if res.BytesIn != int64(len(in)) || res.BytesOut != int64(len(out)) {
			t.Fatalf("byte counts %d/%d for %d/%d", res.BytesIn, res.BytesOut, len(in), len(out))
		}
		sameTokens(t, in, out)
		checkScanner(t, in)
		// Pushing the page in small chunks gives the same output.
		b.Reset()
		w := r.NewWriter(&b, page, "text/html")
		for p := in; p != ""; {
			n := min(3, len(p))
			if _, err := io.WriteString(w, p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if b.String() != out {
			t.Fatalf("chunked output differs:\n got: %q\nwant: %q", b.String(), out)
		}
	})
}

func FuzzRewriteCSS(f *testing.F) {
	for _, s := range []string{checkCSS, `a{b:url("/a\"b.png")} @import 'x.css'; /* url(/c.png) */`, `a{b:url(\2f a.png)}`, `@import url(x.css)`, `url(`, `url("`, `/*`, `"\`, `@import`} {
		f.Add(s)
	}
	r := testRewriter(f, func(c *Config) { c.MaxURLSize = 16 })
	none := testRewriter(f, func(c *Config) { c.Patterns = []string{"*.never-matches"} })
	page := mustURL(f, "https://www.example.test/css/site.css")
	f.Fuzz(func(t *testing.T, in string) {
		var b bytes.Buffer
		if _, err := none.Rewrite(&b, strings.NewReader(in), page, "text/css"); err != nil {
			t.Fatal(err)
		}
		if b.String() != in {
			t.Fatalf("unchanged CSS changed:\n in: %q\nout: %q", in, b.String())
		}
		b.Reset()
		res, err := r.Rewrite(&b, strings.NewReader(in), page, "text/css")
		if err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if res.References == 0 && out != in {
			t.Fatalf("no reference rewritten but output changed:\n in: %q\nout: %q", in, out)
		}
		if got := strings.Count(out, testCDN) - strings.Count(in, testCDN); got != res.References {
			t.Fatalf("%d references counted, %d CDN URLs added:\n in: %q\nout: %q", res.References, got, in, out)
		}
		b.Reset()
		w := r.NewWriter(&b, page, "text/css")
		for i := 0; i < len(in); i++ {
			if _, err := w.Write([]byte{in[i]}); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if b.String() != out {
			t.Fatalf("byte-by-byte output differs:\n got: %q\nwant: %q", b.String(), out)
		}
	})
}

func asciiLower(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = lowerByte(c)
	}
	return out
}

// FuzzResolve checks that the fast path of URL rewriting agrees with the
// general resolution through net/url.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"/a.png", "a.png", "img/a.png?x=1#f", "../a.png", "./a.png", "/a(1).png", "/a%20b.png", "a.png#", "a.png?", "/static/x", "/a.png#a%20b", "/a.png?q=a b", "//h/a.png", "/a.png##",
		"https://www.example.test/a.png", "HTTP://127.0.0.1:8080/x/../a.png", "//www.example.test:443/a.png?x#y", "https://WWW.example.test:/a.png", "http://a@www.example.test/a.png"} {
		f.Add(s, "https://www.example.test/dir/page.html")
		f.Add(s, "/x/")
	}
	r := testRewriter(f, nil)
	f.Fuzz(func(t *testing.T, ref, page string) {
		pu, err := url.Parse(page)
		if err != nil {
			return
		}
		rs := r.newResolver(pu)
		fast, ok, decided := rs.fast(ref)
		if !decided {
			return
		}
		slow, sok := rs.slow(ref)
		if ok != sok || fast != slow {
			t.Fatalf("ref %q on page %q: fast %q %v, slow %q %v", ref, page, fast, ok, slow, sok)
		}
	})
}
