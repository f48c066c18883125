package gateway

import (
	"bytes"
	"io"
	"net/netip"
	"net/url"

	"github.com/valyala/fasthttp"

	"github.com/scaleout/scaleout/cdn"
)

// serveCDN runs a request of a route with CDN offloading: assets get the
// headers a CDN needs and are counted; HTML and CSS responses have their
// asset URLs rewritten to the CDN host as they stream through.
func (g *Gateway) serveCDN(ctx *fasthttp.RequestCtx, rt *route) {
	rw := rt.cdn
	path := string(ctx.Path())
	asset := rw.IsAsset(path)
	var fromCDN bool
	if asset {
		remote, _ := netip.AddrFromSlice(ctx.RemoteIP())
		fromCDN = rw.FromCDN(remote.Unmap(), func(name string) string { return string(ctx.Request.Header.Peek(name)) })
	}
	acceptEncoding := string(ctx.Request.Header.Peek(fasthttp.HeaderAcceptEncoding))
	page := pageURL(ctx)

	// A streamed body is rewritten as it passes, by a filter the proxy
	// applies before the client gets the body; a buffered one afterwards.
	var streamed bool
	var upEnc, outEnc string
	decide := func(h *fasthttp.ResponseHeader) bool {
		if h.StatusCode() != fasthttp.StatusOK || !rw.Rewritable(string(h.ContentType())) || ctx.IsHead() {
			return false
		}
		upEnc = string(h.ContentEncoding())
		if !encodingKnown(upEnc) {
			return false // an encoding we cannot decode passes untouched
		}
		outEnc = cdn.Negotiate(upEnc, acceptEncoding)
		return true
	}
	filter := func(h *fasthttp.ResponseHeader, body io.Reader, size int) (io.Reader, int) {
		if !decide(h) {
			return body, size
		}
		r, err := newRewriteReader(rw, body, page, string(h.ContentType()), upEnc, outEnc)
		if err != nil {
			return body, size
		}
		streamed = true
		return r, -1
	}
	rt.upstream.proxy.ServeFiltered(ctx, rt.upstream.name, rt.upstream.pool, filter)

	resp := &ctx.Response
	if asset && resp.StatusCode() == fasthttp.StatusOK {
		h, _ := rw.AssetHeaders(path, string(ctx.URI().QueryString()), string(ctx.Request.Header.Peek("Origin")))
		if h.CacheControl != "" {
			resp.Header.Set(fasthttp.HeaderCacheControl, h.CacheControl)
		}
		if h.AccessControlAllowOrigin != "" {
			resp.Header.Set(fasthttp.HeaderAccessControlAllowOrigin, h.AccessControlAllowOrigin)
		}
		if h.Vary != "" {
			resp.Header.Add(fasthttp.HeaderVary, h.Vary)
		}
	}
	rewrite := streamed
	if !resp.IsBodyStream() {
		rewrite = decide(&resp.Header)
		if rewrite {
			var out bytes.Buffer
			if _, err := rw.RewriteEncoded(&out, bytes.NewReader(resp.Body()), page, string(resp.Header.ContentType()), upEnc, outEnc); err != nil {
				g.log.Warn("cdn rewrite failed; page passed through unchanged", "path", path, "err", err)
				rewrite = false
			} else {
				resp.SetBody(out.Bytes())
			}
		}
	}
	if rewrite {
		resp.Header.Del(fasthttp.HeaderContentEncoding)
		if outEnc != "" && outEnc != "identity" {
			resp.Header.Set(fasthttp.HeaderContentEncoding, outEnc)
		}
		weakenETag(&resp.Header)
		resp.Header.Add(fasthttp.HeaderVary, "Accept-Encoding")
	}
	if asset && resp.StatusCode() == fasthttp.StatusOK {
		g.countAsset(resp, rw, fromCDN)
	}
}

// countAsset records an asset response's size for the offload rate. A
// streamed body of unknown length counts as its Content-Length or 0.
func (g *Gateway) countAsset(resp *fasthttp.Response, rw *cdn.Rewriter, fromCDN bool) {
	n := int64(resp.Header.ContentLength())
	if !resp.IsBodyStream() {
		n = int64(len(resp.Body()))
	}
	rw.RecordAsset(fromCDN, max(n, 0))
}

func encodingKnown(enc string) bool {
	switch enc {
	case "", "identity", "gzip", "x-gzip", "br":
		return true
	}
	return false
}

func weakenETag(h *fasthttp.ResponseHeader) {
	et := h.Peek(fasthttp.HeaderETag)
	if len(et) > 0 && !bytes.HasPrefix(et, []byte("W/")) {
		h.Set(fasthttp.HeaderETag, "W/"+string(et))
	}
}

// pageURL is the URL the client asked for, copied out of ctx so that a
// rewriter that outlives the handler does not hold on to it.
func pageURL(ctx *fasthttp.RequestCtx) *url.URL {
	scheme := "http"
	if ctx.IsTLS() {
		scheme = "https"
	}
	u, err := url.Parse(scheme + "://" + string(ctx.Host()) + string(ctx.RequestURI()))
	if err != nil {
		return &url.URL{Scheme: scheme, Host: string(ctx.Host()), Path: string(ctx.Path())}
	}
	return u
}

// rewriteReader turns the push-style cdn.Writer into the pull-style reader
// fasthttp wants for a streamed body, without a goroutine: each Read pulls
// a chunk from the upstream body, pushes it through decoder, rewriter and
// encoder, and hands out what came out.
type rewriteReader struct {
	src     io.Reader     // upstream body as received
	decoded io.ReadCloser // src decoded
	enc     io.WriteCloser
	w       *cdn.Writer
	out     bytes.Buffer
	chunk   []byte
	eof     bool
	err     error
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

func newRewriteReader(rw *cdn.Rewriter, src io.Reader, page *url.URL, ct, upEnc, outEnc string) (*rewriteReader, error) {
	r := &rewriteReader{src: src, chunk: make([]byte, 32<<10)}
	dec, err := cdn.Decode(src, upEnc)
	if err != nil {
		return nil, err
	}
	r.decoded = dec
	if outEnc == "" || outEnc == "identity" {
		r.enc = nopWriteCloser{&r.out}
	} else if r.enc, err = cdn.Encode(&r.out, outEnc); err != nil {
		dec.Close()
		return nil, err
	}
	r.w = rw.NewWriter(r.enc, page, ct)
	return r, nil
}

// Read implements io.Reader.
func (r *rewriteReader) Read(p []byte) (int, error) {
	for r.out.Len() == 0 && !r.eof {
		if r.err != nil {
			return 0, r.err
		}
		n, err := r.decoded.Read(r.chunk)
		if n > 0 {
			if _, werr := r.w.Write(r.chunk[:n]); werr != nil {
				r.err = werr
			}
		}
		switch {
		case err == io.EOF:
			r.eof = true
			if cerr := r.w.Close(); cerr != nil && r.err == nil {
				r.err = cerr
			}
			if cerr := r.enc.Close(); cerr != nil && r.err == nil {
				r.err = cerr
			}
		case err != nil:
			r.err = err
		}
	}
	if r.out.Len() > 0 {
		return r.out.Read(p)
	}
	if r.err != nil {
		return 0, r.err
	}
	return 0, io.EOF
}

// Close releases the rewriter and closes the upstream body, which returns
// its backend connection.
func (r *rewriteReader) Close() error {
	if !r.eof {
		_ = r.w.Close()
		_ = r.enc.Close()
	}
	r.decoded.Close()
	if c, ok := r.src.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
