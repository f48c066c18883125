package cdn

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
	brotli "github.com/molecule-man/go-brrr"
)

// ErrUnsupportedEncoding is returned for a Content-Encoding that the package
// cannot decode or encode; the gateway then passes the body through
// unrewritten.
var ErrUnsupportedEncoding = errors.New("cdn: unsupported content encoding")

// Encodings supported by [Decode] and [Encode].
const (
	EncodingIdentity = ""
	EncodingGzip     = "gzip"
	EncodingBrotli   = "br"
)

// brotliLevel trades ratio for speed on the fly (like nginx's default 6).
const brotliLevel = 5

// normEncoding canonicalises a Content-Encoding value.
func normEncoding(enc string) (string, error) {
	switch e := strings.ToLower(strings.TrimSpace(enc)); e {
	case "", "identity":
		return EncodingIdentity, nil
	case "gzip", "x-gzip":
		return EncodingGzip, nil
	case "br":
		return EncodingBrotli, nil
	default:
		return "", fmt.Errorf("%w: %q", ErrUnsupportedEncoding, enc)
	}
}

// Decode returns a reader of the decoded body of src, which is encoded with
// contentEncoding (a Content-Encoding value: "", identity, gzip, x-gzip or
// br). Close releases the decoder; it does not close src.
func Decode(src io.Reader, contentEncoding string) (io.ReadCloser, error) {
	enc, err := normEncoding(contentEncoding)
	if err != nil {
		return nil, err
	}
	switch enc {
	case EncodingGzip:
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, fmt.Errorf("cdn: reading gzip header: %w", err)
		}
		return zr, nil
	case EncodingBrotli:
		return brotli.NewReader(src), nil
	}
	return io.NopCloser(src), nil
}

// Encode returns a writer that encodes into dst with contentEncoding ("",
// gzip or br). Close flushes the encoder; it does not close dst.
func Encode(dst io.Writer, contentEncoding string) (io.WriteCloser, error) {
	enc, err := normEncoding(contentEncoding)
	if err != nil {
		return nil, err
	}
	switch enc {
	case EncodingGzip:
		return gzip.NewWriterLevel(dst, gzip.DefaultCompression)
	case EncodingBrotli:
		return brotli.NewWriter(dst, brotliLevel)
	}
	return nopWriteCloser{dst}, nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// Negotiate picks the encoding of a rewritten response: the upstream's
// Content-Encoding when the client's Accept-Encoding allows it, else br or
// gzip if accepted (in that order), else identity (""). It follows the
// q-values of Accept-Encoding (q=0 refuses, "*" matches any).
func Negotiate(upstreamEncoding, acceptEncoding string) string {
	if up, err := normEncoding(upstreamEncoding); err == nil && up != "" && accepts(acceptEncoding, up) {
		return up
	}
	for _, e := range []string{EncodingBrotli, EncodingGzip} {
		if accepts(acceptEncoding, e) {
			return e
		}
	}
	return EncodingIdentity
}

// accepts reports whether an Accept-Encoding value allows coding.
func accepts(acceptEncoding, coding string) bool {
	star := -1.0
	for _, part := range strings.Split(acceptEncoding, ",") {
		name, params, _ := strings.Cut(part, ";")
		name = strings.ToLower(strings.TrimSpace(name))
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		switch {
		case name == coding || coding == EncodingGzip && name == "x-gzip":
			return q > 0
		case name == "*":
			star = q
		}
	}
	return star > 0
}

// RewriteEncoded rewrites a body encoded with upstreamEncoding into dst
// encoded with outEncoding (see [Negotiate]): decode, rewrite, re-encode, as
// one stream. The response's Content-Length no longer holds and must be
// dropped, and a strong ETag should be made weak.
func (r *Rewriter) RewriteEncoded(dst io.Writer, src io.Reader, page *url.URL, contentType, upstreamEncoding, outEncoding string) (Result, error) {
	dec, err := Decode(src, upstreamEncoding)
	if err != nil {
		return Result{}, err
	}
	defer dec.Close()
	enc, err := Encode(dst, outEncoding)
	if err != nil {
		return Result{}, err
	}
	res, err := r.Rewrite(enc, dec, page, contentType)
	if cerr := enc.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("cdn: encoding %s: %w", outEncoding, cerr)
	}
	return res, err
}
