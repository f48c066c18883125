package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scaleout/scaleout/cdn"
	"github.com/scaleout/scaleout/proxy"
)

// cdnRoute is a route's rewriter and, with fingerprinting, the asset
// versions it has learnt.
type cdnRoute struct {
	rw       *cdn.Rewriter
	versions *liveVersions
	lastHost atomic.Pointer[string]
}

// versionRecheck is how often an asset's version is asked of the origin
// again while pages reference it: a CDN serves a fingerprinted asset for a
// year without asking the origin, so the gateway cannot wait for the asset
// to pass through it to see that it changed.
const versionRecheck = 30 * time.Second

// liveVersions are the asset versions of a fingerprinting route: learnt
// from the ETags of the assets the gateway serves, and rechecked with a
// HEAD request to the origin, in the background, when a page references an
// asset whose version was not checked for versionRecheck.
type liveVersions struct {
	vm      cdn.VersionMap
	mu      sync.Mutex
	checked map[string]time.Time
	// refresh asks the origin for an asset's ETag; set with each router.
	refresh atomic.Pointer[func(path string)]
	// recheck overrides versionRecheck (tests).
	recheck time.Duration
}

// Version implements cdn.Versioner; it never blocks.
func (l *liveVersions) Version(path string) (string, bool) {
	v, ok := l.vm.Version(path)
	now := time.Now()
	l.mu.Lock()
	if l.checked == nil || len(l.checked) > 10000 {
		l.checked = map[string]time.Time{}
	}
	every := versionRecheck
	if l.recheck > 0 {
		every = l.recheck
	}
	due := now.Sub(l.checked[path]) > every
	if due {
		l.checked[path] = now
	}
	l.mu.Unlock()
	if f := l.refresh.Load(); due && f != nil {
		go (*f)(path)
	}
	return v, ok
}

// learn records the version an asset response carries.
func (l *liveVersions) learn(path, etag string) {
	if v := cdn.ETagVersion(etag); v != "" {
		l.vm.Set(path, v)
	}
}

// versionRefresher returns the refresh function of a route: a HEAD request
// for the asset through the route's upstream, whose ETag becomes its
// version.
func versionRefresher(rt *route) func(path string) {
	return func(path string) {
		req := &fasthttp.Request{}
		req.Header.SetMethod(fasthttp.MethodHead)
		req.SetRequestURI(path)
		host := rt.lastHost.Load()
		if host == nil {
			return // no page served yet: nothing references the asset
		}
		req.Header.SetHost(*host)
		bctx := &fasthttp.RequestCtx{}
		bctx.Init(req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, nil)
		rt.upstream.proxy.Serve(bctx, rt.upstream.name, rt.upstream.pool)
		if bctx.Response.StatusCode() == fasthttp.StatusOK {
			rt.versions.learn(path, string(bctx.Response.Header.Peek(fasthttp.HeaderETag)))
		}
		drainBody(&bctx.Response)
	}
}

// serveCDN runs a request of a route with CDN offloading: assets get the
// headers a CDN needs and are counted; HTML and CSS responses have their
// asset URLs rewritten to the CDN host as they stream through.
func (g *Gateway) serveCDN(ctx *fasthttp.RequestCtx, rt *route, outer proxy.BodyFilter) {
	rw := rt.cdn
	path := string(ctx.Path())
	asset := rw.IsAsset(path)
	var fromCDN bool
	if asset {
		remote, _ := netip.AddrFromSlice(ctx.RemoteIP())
		fromCDN = rw.FromCDN(remote.Unmap(), func(name string) string { return string(ctx.Request.Header.Peek(name)) })
	}
	if rt.versions != nil {
		host := string(ctx.Host())
		rt.lastHost.Store(&host)
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
		if decide(h) {
			if r, err := newRewriteReader(rw, body, page, string(h.ContentType()), upEnc, outEnc); err == nil {
				streamed = true
				body, size = r, -1
			}
		}
		if outer != nil {
			return outer(h, body, size)
		}
		return body, size
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
		if rt.versions != nil {
			rt.versions.learn(path, string(resp.Header.Peek(fasthttp.HeaderETag)))
			// Immutable only for the version the asset has now: an old or
			// made-up ?v= must not be cached for a year.
			if v := ctx.QueryArgs().Peek("v"); len(v) > 0 {
				if cur, ok := rt.versions.vm.Version(path); !ok || cur != string(v) {
					plain, _ := rw.AssetHeaders(path, "", "")
					if plain.CacheControl != "" {
						resp.Header.Set(fasthttp.HeaderCacheControl, plain.CacheControl)
					}
				}
			}
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

// rewriteReader is a streamed body rewritten on the way: a goroutine
// decodes, rewrites and re-encodes the upstream body into a pipe, and
// fasthttp reads the other end. (cdn.Writer tokenizes on a goroutine of its
// own anyway, so the pipe costs no extra concurrency.)
type rewriteReader struct {
	pr   *io.PipeReader
	src  io.Reader
	done chan struct{}
}

var errClientGone = errors.New("client went away")

func newRewriteReader(rw *cdn.Rewriter, src io.Reader, page *url.URL, ct, upEnc, outEnc string) (*rewriteReader, error) {
	pr, pw := io.Pipe()
	r := &rewriteReader{pr: pr, src: src, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_, err := rw.RewriteEncoded(pw, src, page, ct, upEnc, outEnc)
		pw.CloseWithError(err)
	}()
	return r, nil
}

// Read implements io.Reader.
func (r *rewriteReader) Read(p []byte) (int, error) { return r.pr.Read(p) }

// Close stops the rewriting and closes the upstream body, which returns its
// backend connection. The upstream body is closed only once the rewriting
// goroutine has stopped reading it; Close itself never waits for the
// backend.
func (r *rewriteReader) Close() error {
	r.pr.CloseWithError(errClientGone)
	closeSrc := func() {
		if c, ok := r.src.(io.Closer); ok {
			_ = c.Close()
		}
	}
	select {
	case <-r.done:
		closeSrc()
	default:
		go func() {
			<-r.done
			closeSrc()
		}()
	}
	return nil
}
