package cdn

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOversizedTokens checks that tokens longer than MaxTokenSize are copied
// through unchanged, wherever the tokenizer's buffer runs out, and that
// rewriting resumes right after them in the right context.
func TestOversizedTokens(t *testing.T) {
	t.Parallel()
	small := testRewriter(t, func(c *Config) { c.MaxTokenSize = 256 })
	big := testRewriter(t, func(c *Config) { c.MaxTokenSize = 1 << 20 })
	after := `<img src="/after.png"><p>x</p>`
	kinds := []struct {
		name string
		make func(pad string) string
	}{
		{"script", func(pad string) string {
			return `<script>var a = "` + pad + `"; document.write('<img src="/in-script.png">');</script>` + after
		}},
		{"script with end tag at the split", func(pad string) string { return `<script>` + pad + `</script>` + after }},
		{"script with less-than", func(pad string) string { return `<script>if (a<b) {` + pad + `}</script>` + after }},
		{"textarea", func(pad string) string { return `<textarea>` + pad + `<img src="/in.png"></textarea>` + after }},
		{"noscript", func(pad string) string { return `<noscript>` + pad + `</noscript>` + after }},
		{"comment", func(pad string) string { return `<!--` + pad + `<img src="/in-comment.png">-->` + after }},
		{"comment ending with dashes", func(pad string) string { return `<!--` + pad + `----!>` + after }},
		{"doctype", func(pad string) string { return `<!DOCTYPE ` + pad + `>` + after }},
		{"bogus comment", func(pad string) string { return `<?xml ` + pad + `?>` + after }},
		{"text", func(pad string) string { return `<p>` + pad + after }},
		{"text ending at a tag", func(pad string) string { return pad + `<script>"<img src='/in.png'>"</script>` + after }},
		{"start tag", func(pad string) string { return `<img alt="` + pad + `" title=x>` + after }},
		{"start tag with unquoted values", func(pad string) string { return `<div a=` + pad + ` b='>' c="x>y">` + after }},
		{"raw start tag", func(pad string) string { return `<script data-x="` + pad + `">"<img src='/in.png'>"</script>` + after }},
		{"end tag", func(pad string) string { return `<p>x</p ` + pad + `>` + after }},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			for n := 0; n < 700; n++ {
				if (n < 180 || n > 330) && n%7 != 0 {
					continue // every split point near the 256-byte limit, samples elsewhere
				}
				in := k.make(strings.Repeat("x", n))
				want, _ := rewriteString(t, big, "https://www.example.test/", "text/html", in)
				got, _ := rewriteString(t, small, "https://www.example.test/", "text/html", in)
				if got != want {
					t.Fatalf("pad %d:\n in:  %q\ngot:  %q\nwant: %q", n, in, got, want)
				}
				if !strings.HasSuffix(got, `<img src="https://cdn.test/after.png"><p>x</p>`) {
					t.Fatalf("pad %d: not rewritten after the long token: %q", n, got)
				}
			}
		})
	}
	t.Run("style", func(t *testing.T) {
		t.Parallel()
		for n := 0; n < 700; n += 3 {
			in := `<style>` + strings.Repeat("a{b:url(/s.png)}", 30) + strings.Repeat(" ", n) + `</style>` + after
			got, res := rewriteString(t, small, "https://www.example.test/", "text/html", in)
			if back := strings.ReplaceAll(got, testCDN, ""); back != in {
				t.Fatalf("pad %d: bytes lost: %q", n, got)
			}
			if !strings.HasSuffix(got, `<img src="https://cdn.test/after.png"><p>x</p>`) || res.References < 25 {
				t.Fatalf("pad %d: %d references: %q", n, res.References, got)
			}
		}
	})
}

// pageGen streams a large page without holding it in memory.
type pageGen struct {
	left  int64 // bytes still to generate; the last block may overshoot
	total int64
	i     int
	buf   []byte
	refs  int // references a correct rewriter rewrites
	kinds int
}

func (g *pageGen) Read(p []byte) (int, error) {
	for len(g.buf) == 0 {
		if g.left <= 0 {
			return 0, io.EOF
		}
		g.buf = g.next()
		g.left -= int64(len(g.buf))
		g.total += int64(len(g.buf))
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

// next returns the next block of the page: mostly ordinary markup, and now
// and then a token far longer than the tokenizer's limit.
func (g *pageGen) next() []byte {
	g.i++
	var b strings.Builder
	switch {
	case g.i%500 == 0:
		switch (g.i / 500) % 5 {
		case 0:
			b.WriteString(`<script>var blob = "` + strings.Repeat("/static/x.png ", 150_000) + `";</script>`)
		case 1:
			b.WriteString(`<!--` + strings.Repeat(`<img src="/c.png">`, 120_000) + `-->`)
		case 2:
			b.WriteString(`<img alt="inline" src="data:image/png;base64,` + strings.Repeat("QUFB", 600_000) + `">`)
		case 3:
			b.WriteString(`<p>` + strings.Repeat("lorem ipsum ", 200_000) + `</p>`)
		case 4:
			b.WriteString(`<textarea>` + strings.Repeat(`<img src="/t.png">`, 120_000) + `</textarea>`)
		}
		g.kinds++
	default:
		fmt.Fprintf(&b, `<div class="card" id="c%d"><img src="/img/p%d.png" srcset="/img/p%d.png 1x, /img/p%d@2x.png 2x" alt="photo &amp; caption" loading=lazy>`+
			`<p style="background:url('/img/bg.jpg') no-repeat">Lorem ipsum dolor sit amet, <a href="/post/%d">read more</a></p>`+
			`<script>window.x%d = "/static/in-script.png";</script></div>`+"\n", g.i, g.i, g.i, g.i, g.i, g.i)
		g.refs += 4
	}
	return []byte(b.String())
}

// unrewriteChecker compares a rewritten stream, with the CDN host removed
// again, to the original stream, and samples the heap as it goes.
type unrewriteChecker struct {
	want     io.Reader
	carry    []byte
	n        int64
	err      error
	maxHeap  uint64 // live heap, sampled after a GC every 4 MiB of output
	nextPeek int64
}

func (c *unrewriteChecker) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	data := append(c.carry, p...)
	// Keep a possible partial host at the end for the next write.
	keep := 0
	for k := len(testCDN) - 1; k > 0; k-- {
		if k <= len(data) && bytes.HasSuffix(data, []byte(testCDN[:k])) {
			keep = k
			break
		}
	}
	head := bytes.ReplaceAll(data[:len(data)-keep], []byte(testCDN), nil)
	c.carry = append([]byte(nil), data[len(data)-keep:]...)
	c.compare(head)
	if c.n >= c.nextPeek {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		c.maxHeap = max(c.maxHeap, ms.HeapAlloc)
		c.nextPeek = c.n + 4<<20
	}
	return len(p), nil
}

func (c *unrewriteChecker) compare(got []byte) {
	if c.err != nil || len(got) == 0 {
		return
	}
	want := make([]byte, len(got))
	if _, err := io.ReadFull(c.want, want); err != nil {
		c.err = fmt.Errorf("output longer than input: %w", err)
		return
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		c.err = fmt.Errorf("output differs at output byte %d: got %q, want %q", c.n, got[i:min(len(got), i+80)], want[i:min(len(want), i+80)])
	}
}

// TestLargePageBoundedMemory streams a 50 MB page with long tokens through
// the rewriter and checks that every byte survives, every reference is
// rewritten, and the heap stays small.
func TestLargePageBoundedMemory(t *testing.T) {
	r := testRewriter(t, nil)
	const size = 50 << 20
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc

	src := &pageGen{left: size}
	chk := &unrewriteChecker{want: &pageGen{left: size}}
	w := r.NewWriter(chk, mustURL(t, "https://www.example.test/"), "text/html")
	buf := make([]byte, 16<<10)
	if _, err := io.CopyBuffer(w, src, buf); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	chk.compare(bytes.ReplaceAll(chk.carry, []byte(testCDN), nil))
	if chk.err != nil {
		t.Fatal(chk.err)
	}
	if rest, _ := io.ReadAll(chk.want); len(rest) > 0 {
		t.Fatalf("output is %d bytes short", len(rest))
	}
	res := w.Result()
	if res.BytesIn != src.total || src.total < size {
		t.Errorf("BytesIn = %d, want %d", res.BytesIn, src.total)
	}
	if res.References != src.refs {
		t.Errorf("References = %d, want %d (every reference outside scripts, comments, textareas)", res.References, src.refs)
	}
	if src.kinds < 10 || res.Oversized < src.kinds {
		t.Errorf("Oversized = %d for %d long tokens", res.Oversized, src.kinds)
	}
	grew := int64(chk.maxHeap) - int64(base)
	t.Logf("50 MB page: %d references, %d oversized tokens, peak heap growth %.1f MiB", res.References, res.Oversized, float64(grew)/(1<<20))
	if grew > 16<<20 {
		t.Errorf("heap grew by %d MiB while streaming a 50 MiB page; want bounded (< 16 MiB)", grew>>20)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWriterStreams checks that what has been pushed is rewritten and passed
// on before the body ends: the browser must get the <head> (and start
// fetching stylesheets) while the app is still producing the page.
func TestWriterStreams(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, nil)
	for _, tc := range []struct{ ct, head, want, tail string }{
		{"text/html", `<html><head><link rel=stylesheet href=/a.css></head><body>`, `<link rel=stylesheet href=https://cdn.test/a.css></head><body>`, `<p>rest</p></body></html>`},
		{"text/css", `a{b:url(/a.png)} `, `a{b:url(https://cdn.test/a.png)} `, `c{d:url(/e.png)}`},
	} {
		var dst lockedBuffer
		w := r.NewWriter(&dst, mustURL(t, "https://www.example.test/"), tc.ct)
		if _, err := io.WriteString(w, tc.head); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.HasSuffix(dst.String(), tc.want) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := dst.String(); !strings.HasSuffix(got, tc.want) {
			t.Errorf("%s: after the first chunk the destination has %q; want it to end with %q", tc.ct, got, tc.want)
		}
		if _, err := io.WriteString(w, tc.tail); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
