package cdn

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	brotli "github.com/molecule-man/go-brrr"
)

func encodeString(t *testing.T, s, enc string) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := Encode(&b, enc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func decodeBytes(t *testing.T, b []byte, enc string) string {
	t.Helper()
	r, err := Decode(bytes.NewReader(b), enc)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return string(out)
}

// TestEncodedRoundTrips decodes gzip and br upstream bodies, rewrites them and
// encodes them again, in every combination; an upstream that compresses
// must not make the rewriter skip the page.
func TestEncodedRoundTrips(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, nil)
	page := mustURL(t, "https://www.example.test/")
	in := strings.Repeat(checkPage+"\n", 200)
	want, _ := rewriteString(t, r, page.String(), "text/html", in)
	for _, up := range []string{"", "gzip", "x-gzip", "br", "identity"} {
		for _, out := range []string{"", "gzip", "br"} {
			t.Run(up+"->"+out, func(t *testing.T) {
				t.Parallel()
				body := encodeString(t, in, strings.TrimPrefix(up, "x-"))
				if up == "" || up == "identity" {
					body = []byte(in)
				}
				var dst bytes.Buffer
				res, err := r.RewriteEncoded(&dst, bytes.NewReader(body), page, "text/html", up, out)
				if err != nil {
					t.Fatal(err)
				}
				if got := decodeBytes(t, dst.Bytes(), out); got != want {
					t.Errorf("%s -> %s: rewritten body differs", up, out)
				}
				if res.References != 6*200 {
					t.Errorf("References = %d", res.References)
				}
				if out != "" && dst.Len() >= len(want)/2 {
					t.Errorf("%s output not compressed: %d bytes for %d", out, dst.Len(), len(want))
				}
			})
		}
	}
	t.Run("standard decoders read the output", func(t *testing.T) {
		var gz, br bytes.Buffer
		if _, err := r.RewriteEncoded(&gz, strings.NewReader(in), page, "text/html", "", "gzip"); err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(&gz)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(zr); string(b) != want {
			t.Error("gzip output not readable by a gzip reader")
		}
		if _, err := r.RewriteEncoded(&br, strings.NewReader(in), page, "text/html", "", "br"); err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(brotli.NewReader(&br)); string(b) != want {
			t.Error("br output not readable by a brotli reader")
		}
	})
	t.Run("unsupported and corrupt", func(t *testing.T) {
		if _, err := Decode(strings.NewReader("x"), "zstd"); !errors.Is(err, ErrUnsupportedEncoding) {
			t.Errorf("zstd: %v", err)
		}
		if _, err := Encode(io.Discard, "compress"); !errors.Is(err, ErrUnsupportedEncoding) {
			t.Errorf("compress: %v", err)
		}
		if _, err := r.RewriteEncoded(io.Discard, strings.NewReader("not gzip"), page, "text/html", "gzip", ""); err == nil {
			t.Error("corrupt gzip: no error")
		}
		if _, err := r.RewriteEncoded(io.Discard, strings.NewReader("not brotli at all"), page, "text/html", "br", ""); err == nil {
			t.Error("corrupt br: no error")
		}
	})
}

// TestGzipUpstream rewrites a gzip-encoded page served by a real HTTP server,
// as the gateway will: decode per Content-Encoding, re-encode per Negotiate.
func TestGzipUpstream(t *testing.T) {
	t.Parallel()
	r := testRewriter(t, nil)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, _ = io.WriteString(zw, checkPage)
		_ = zw.Close()
	}))
	defer up.Close()
	req, _ := http.NewRequest(http.MethodGet, up.URL+"/gz", nil)
	req.Header.Set("Accept-Encoding", "gzip") // handled by us, not by the transport
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	outEnc := Negotiate(resp.Header.Get("Content-Encoding"), "gzip, deflate")
	if outEnc != "gzip" {
		t.Fatalf("Negotiate = %q", outEnc)
	}
	var dst bytes.Buffer
	if _, err := r.RewriteEncoded(&dst, resp.Body, mustURL(t, "https://www.example.test/gz"), resp.Header.Get("Content-Type"), resp.Header.Get("Content-Encoding"), outEnc); err != nil {
		t.Fatal(err)
	}
	got := decodeBytes(t, dst.Bytes(), "gzip")
	if !strings.Contains(got, testCDN+"/img/logo-2x.png 2x") || !strings.Contains(got, `"/static/in-script.png"`) {
		t.Errorf("gzip page not rewritten: %s", got)
	}
}

func TestNegotiate(t *testing.T) {
	t.Parallel()
	tests := []struct{ up, accept, want string }{
		{"gzip", "gzip, deflate, br", "gzip"},
		{"br", "gzip, deflate, br", "br"},
		{"br", "gzip", "gzip"},
		{"", "gzip, br", "br"},
		{"", "", ""},
		{"gzip", "", ""},
		{"gzip", "identity", ""},
		{"gzip", "gzip;q=0, br;q=0.5", "br"},
		{"gzip", "*", "gzip"},
		{"", "*;q=0", ""},
		{"x-gzip", "x-gzip", "gzip"},
		{"zstd", "gzip, zstd", "gzip"},
		{"gzip", "GZIP;Q=1.0", "gzip"},
	}
	for _, tc := range tests {
		if got := Negotiate(tc.up, tc.accept); got != tc.want {
			t.Errorf("Negotiate(%q, %q) = %q, want %q", tc.up, tc.accept, got, tc.want)
		}
	}
}
