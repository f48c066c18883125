package cdn

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// BenchmarkRewrite measures rewrite throughput against copying the same bytes
// unchanged, in one run:
//
//	go test -run XXX -bench Rewrite -benchmem ./cdn/
func BenchmarkRewrite(b *testing.B) {
	real, err := os.ReadFile(filepath.Join(docSite, "manual-core.html"))
	if err != nil {
		b.Fatalf("install valgrind for its HTML manual: %v", err)
	}
	bodies := []struct {
		name, ct string
		body     []byte
	}{
		{"real-page", "text/html", real},
		{"asset-heavy-page", "text/html", []byte(strings.Repeat(checkPage+"\n", 200))},
		{"css", "text/css", []byte(strings.Repeat(checkCSS+" .a{color:red;font:12px/1.4 sans-serif} /* x */\n", 2000))},
	}
	r := testRewriter(b, nil)
	page := mustURL(b, "https://www.example.test/dir/page.html")
	for _, bd := range bodies {
		b.Run(bd.name+"/copy", func(b *testing.B) {
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(bd.body)))
			b.ReportAllocs()
			defer reportCPU(b, len(bd.body))()
			for b.Loop() {
				// Plain Reader and Writer, so that the copy moves 32 KiB
				// chunks as a proxy does, rather than one WriteTo call.
				if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{bytes.NewReader(bd.body)}, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		if bd.ct == "text/html" {
			// The floor: x/net/html's tokenizer alone, copying every
			// token's raw bytes.
			b.Run(bd.name+"/tokenize-only", func(b *testing.B) {
				b.SetBytes(int64(len(bd.body)))
				b.ReportAllocs()
				defer reportCPU(b, len(bd.body))()
				for b.Loop() {
					z := html.NewTokenizer(bytes.NewReader(bd.body))
					w := bufio.NewWriterSize(io.Discard, 32<<10)
					for z.Next() != html.ErrorToken {
						_, _ = w.Write(z.Raw())
					}
					_ = w.Flush()
				}
			})
		}
		b.Run(bd.name+"/rewrite", func(b *testing.B) {
			b.SetBytes(int64(len(bd.body)))
			b.ReportAllocs()
			defer reportCPU(b, len(bd.body))()
			for b.Loop() {
				if _, err := r.Rewrite(io.Discard, bytes.NewReader(bd.body), page, bd.ct); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bd.name+"/writer-32k-chunks", func(b *testing.B) {
			b.SetBytes(int64(len(bd.body)))
			b.ReportAllocs()
			defer reportCPU(b, len(bd.body))()
			for b.Loop() {
				w := r.NewWriter(io.Discard, page, bd.ct)
				for p := bd.body; len(p) > 0; {
					n := min(32<<10, len(p))
					if _, err := w.Write(p[:n]); err != nil {
						b.Fatal(err)
					}
					p = p[n:]
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// reportCPU adds throughput per CPU-second used by the whole process
// (GC included) to a benchmark: on a shared, loaded machine it varies far
// less than wall-clock MB/s.
func reportCPU(b *testing.B, size int) func() {
	start := processCPU()
	return func() {
		if d := processCPU() - start; d > 0 {
			b.ReportMetric(float64(size)*float64(b.N)/d.Seconds()/1e6, "MB/cpu-s")
		}
	}
}
