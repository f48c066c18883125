package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/scaleout/scaleout/httpcache"
)

// httpCache is the gateway's shared HTTP cache: the store, the
// coalescing of concurrent misses, and background refreshes.
type httpCache struct {
	store   *httpcache.Store
	results *prometheus.CounterVec // by route and X-Cache result

	mu      sync.Mutex
	flights map[string]*flight // variant key → the origin fetch in progress
}

// flight is one origin fetch that concurrent misses of a key wait for.
// Waiters are served from the store afterwards only if the leader stored
// what it got: a private answer is never handed to them.
type flight struct {
	done   chan struct{}
	stored bool
}

func newHTTPCache(store *httpcache.Store) *httpCache {
	return &httpCache{
		store: store,
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scaleout_httpcache_requests_total",
			Help: "Requests on cached routes by result: hit, miss, stale, bypass, revalidated.",
		}, []string{"route", "result"}),
		flights: map[string]*flight{},
	}
}

// join returns the flight for key and whether the caller leads it.
func (c *httpCache) join(key string) (*flight, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.flights[key]; f != nil {
		return f, false
	}
	f := &flight{done: make(chan struct{})}
	c.flights[key] = f
	return f, true
}

func (c *httpCache) land(key string, f *flight, stored bool) {
	c.mu.Lock()
	delete(c.flights, key)
	c.mu.Unlock()
	f.stored = stored
	close(f.done)
}

// reqHeader reads a request header for Vary matching.
func reqHeader(ctx *fasthttp.RequestCtx) func(string) string {
	return func(name string) string { return string(ctx.Request.Header.Peek(name)) }
}

func requestDirectives(h *fasthttp.RequestHeader) httpcache.Directives {
	lines := h.PeekAll(fasthttp.HeaderCacheControl)
	vals := make([]string, len(lines))
	for i, v := range lines {
		vals[i] = string(v)
	}
	d := httpcache.ParseCacheControl(vals...)
	if len(vals) == 0 && bytes.Contains(h.Peek("Pragma"), []byte("no-cache")) {
		d.NoCache = true
	}
	return d
}

func schemeOf(ctx *fasthttp.RequestCtx) string {
	if ctx.IsTLS() {
		return "https"
	}
	return "http"
}

// serveCached runs a request on a route with HTTP caching.
func (g *Gateway) serveCached(ctx *fasthttp.RequestCtx, rt *route, c *httpCache) {
	h := &ctx.Request.Header
	primary := httpcache.Key(schemeOf(ctx), string(ctx.Host()), string(ctx.RequestURI()))
	if !h.IsGet() && !h.IsHead() {
		g.serveOrigin(ctx, rt, nil)
		if code := ctx.Response.StatusCode(); httpcache.UnsafeMethod(string(h.Method())) && code >= 200 && code < 400 {
			g.invalidateAfterWrite(ctx, c, primary)
		}
		c.results.WithLabelValues(rt.name, "bypass").Inc()
		ctx.Response.Header.Set("X-Cache", "BYPASS")
		return
	}
	reqCC := requestDirectives(h)
	hdr := reqHeader(ctx)
	bg := context.Background()
	now := time.Now()
	e, variant, found := c.store.Lookup(bg, primary, hdr)
	if found {
		switch {
		case e.Fresh(now, reqCC):
			c.results.WithLabelValues(rt.name, "hit").Inc()
			serveEntry(ctx, e, now, "HIT")
			return
		case !reqCC.NoCache && reqCC.MaxAge < 0 && reqCC.MinFresh <= 0 && e.ServableStale(now):
			c.results.WithLabelValues(rt.name, "stale").Inc()
			g.refreshInBackground(ctx, c, rt, primary, variant, e)
			serveEntry(ctx, e, now, "STALE")
			return
		}
	}
	if reqCC.OnlyIfCached {
		ctx.Error("not in cache\n", fasthttp.StatusGatewayTimeout)
		return
	}
	if len(h.Peek("Range")) > 0 {
		// A range of something not (freshly) stored goes to the origin as
		// asked, so that seeking in a large file works; whole-object
		// requests fill the cache.
		g.serveOrigin(ctx, rt, nil)
		c.results.WithLabelValues(rt.name, "miss").Inc()
		ctx.Response.Header.Set("X-Cache", "MISS")
		return
	}
	f, leader := c.join(variant)
	if !leader {
		select {
		case <-f.done:
		case <-time.After(30 * time.Second):
		}
		if f.stored {
			if e, _, ok := c.store.Lookup(bg, primary, hdr); ok {
				c.results.WithLabelValues(rt.name, "hit").Inc()
				serveEntry(ctx, e, time.Now(), "HIT")
				return
			}
		}
		// The leader's answer was not shareable: fetch our own.
		g.fetchAndStore(ctx, c, rt, primary, nil, reqCC)
		return
	}
	var stale *httpcache.Entry
	if found {
		stale = e
	}
	stored := g.fetchAndStore(ctx, c, rt, primary, stale, reqCC)
	c.land(variant, f, stored)
}

// fetchAndStore sends the request to the origin (conditionally when a
// stale entry with validators exists), stores a storable answer, and
// answers the client. It reports whether something was stored.
func (g *Gateway) fetchAndStore(ctx *fasthttp.RequestCtx, c *httpCache, rt *route, primary string, stale *httpcache.Entry, reqCC httpcache.Directives) bool {
	h := &ctx.Request.Header
	isHead := h.IsHead()
	// Keep the client's conditionals to answer them ourselves; the origin
	// gets ours, so that what comes back is storable.
	clientINM := string(h.Peek("If-None-Match"))
	clientIMS := string(h.Peek("If-Modified-Since"))
	clientRange := string(h.Peek("Range"))
	clientIfRange := string(h.Peek("If-Range"))
	for _, k := range []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "Range", "If-Range"} {
		h.Del(k)
	}
	if isHead {
		h.SetMethod(fasthttp.MethodGet) // fetch the body once, for the store
	}
	if stale != nil {
		if et, lm := stale.Validators(); et != "" || lm != "" {
			if et != "" {
				h.Set("If-None-Match", et)
			}
			if lm != "" {
				h.Set("If-Modified-Since", lm)
			}
		}
	}
	hdr := reqHeader(ctx)
	hasAuth := len(h.Peek("Authorization")) > 0
	opts := rt.cacheOpts
	// A streamed body (chunked, or larger than the proxy buffers) is
	// copied as it passes, up to max_object_bytes, and stored when it ends.
	var tee *teeBody
	filter := func(rh *fasthttp.ResponseHeader, body io.Reader, size int) (io.Reader, int) {
		if int64(size) > opts.MaxObjectBytes {
			return body, size
		}
		tee = &teeBody{src: body, limit: opts.MaxObjectBytes}
		return tee, size
	}
	reqTime := time.Now()
	g.serveOrigin(ctx, rt, filter)
	respTime := time.Now()
	resp := &ctx.Response
	code := resp.StatusCode()
	restore := func() {
		h.Del("If-None-Match")
		h.Del("If-Modified-Since")
		if isHead {
			h.SetMethod(fasthttp.MethodHead)
		}
		if clientINM != "" {
			h.Set("If-None-Match", clientINM)
		}
		if clientIMS != "" {
			h.Set("If-Modified-Since", clientIMS)
		}
		if clientRange != "" {
			h.Set("Range", clientRange)
		}
		if clientIfRange != "" {
			h.Set("If-Range", clientIfRange)
		}
	}
	defer restore()

	rh, order := responseHeader(&resp.Header)
	respCC := httpcache.ParseCacheControl(rh.Values("Cache-Control")...)
	status := code
	if stale != nil && code == fasthttp.StatusNotModified {
		status = stale.Status // a 304 speaks for the stored response
	}
	d := httpcache.Storable(http.MethodGet, reqCC, hasAuth, status, respCC, rh, opts)

	if stale != nil && code == fasthttp.StatusNotModified {
		stale.Refresh(rh, order, reqTime, respTime, d, respCC)
		restore()
		g.store(c, primary, rh, hdr, stale)
		c.results.WithLabelValues(rt.name, "revalidated").Inc()
		serveEntry(ctx, stale, respTime, "HIT")
		return true
	}
	if stale != nil && (code >= 500 || code == 0) && stale.ServableOnError(respTime) {
		restore()
		c.results.WithLabelValues(rt.name, "stale").Inc()
		serveEntry(ctx, stale, respTime, "STALE")
		return false
	}
	c.results.WithLabelValues(rt.name, "miss").Inc()
	if d.Store && resp.IsBodyStream() && tee != nil {
		// Stored when the body has gone through whole; the requests that
		// waited for this one fetch their own meanwhile.
		snap := snapshotVary(rh, hdr)
		tee.done = func(body []byte) {
			g.store(c, primary, rh, snap, httpcache.NewEntry(code, rh, order, body, reqTime, respTime, d, respCC))
		}
	}
	if !d.Store || resp.IsBodyStream() || int64(len(resp.Body())) > opts.MaxObjectBytes {
		resp.Header.Set("X-Cache", "MISS")
		restore()
		if !resp.IsBodyStream() && code == fasthttp.StatusOK && clientINM != "" && httpcache.ETagMatch(clientINM, rh.Get("Etag")) {
			notModified(resp)
		}
		if isHead {
			resp.SkipBody = true
		}
		return false
	}
	body := append([]byte(nil), resp.Body()...)
	e := httpcache.NewEntry(code, rh, order, body, reqTime, respTime, d, respCC)
	g.store(c, primary, rh, hdr, e)
	restore()
	serveEntry(ctx, e, respTime, "MISS")
	// A cookie allowed into the store (without its value) still goes to
	// the client whose request fetched it.
	for _, v := range rh.Values("Set-Cookie") {
		resp.Header.Add("Set-Cookie", v)
	}
	return true
}

// snapshotVary copies the request headers a response varies on, so that
// the response can be stored after the handler has returned.
func snapshotVary(rh http.Header, hdr func(string) string) func(string) string {
	snap := map[string]string{}
	for _, name := range httpcache.ParseVary(rh.Values("Vary")...) {
		snap[name] = hdr(name)
	}
	return func(name string) string { return snap[name] }
}

// teeBody copies a streamed body up to limit bytes as the client reads it,
// and calls done with the copy when the body ended cleanly within the
// limit.
type teeBody struct {
	src   io.Reader
	buf   []byte
	limit int64
	over  bool
	done  func(body []byte) // set by the handler before the body is read
}

// Read implements io.Reader.
func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.src.Read(p)
	if n > 0 && !t.over {
		if int64(len(t.buf)+n) > t.limit {
			t.over, t.buf = true, nil
		} else {
			t.buf = append(t.buf, p[:n]...)
		}
	}
	if err == io.EOF && !t.over && t.done != nil {
		done := t.done
		t.done = nil
		done(t.buf)
	}
	return n, err
}

// Close closes the upstream body.
func (t *teeBody) Close() error {
	if c, ok := t.src.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func (g *Gateway) store(c *httpCache, primary string, rh http.Header, hdr func(string) string, e *httpcache.Entry) {
	vary := httpcache.ParseVary(rh.Values("Vary")...)
	tags := httpcache.ParseTags(append(rh.Values("Cache-Tag"), rh.Values("Surrogate-Key")...)...)
	if err := c.store.Put(context.Background(), primary, vary, hdr, e, tags); err != nil {
		g.log.Warn("http cache: storing failed", "key", primary, "err", err)
	}
}

// responseHeader copies a fasthttp response header into an http.Header
// with the order of its names.
func responseHeader(h *fasthttp.ResponseHeader) (http.Header, []string) {
	out := http.Header{}
	var order []string
	h.VisitAll(func(k, v []byte) {
		name := http.CanonicalHeaderKey(string(k))
		if _, seen := out[name]; !seen {
			order = append(order, name)
		}
		out[name] = append(out[name], string(v))
	})
	if ct := h.ContentType(); len(ct) > 0 && out.Get("Content-Type") == "" {
		out.Set("Content-Type", string(ct))
		order = append(order, "Content-Type")
	}
	return out, order
}

// serveEntry answers the client from a stored entry: 304 when its
// conditional matches, 206 for a satisfiable single range, else the whole
// response.
func serveEntry(ctx *fasthttp.RequestCtx, e *httpcache.Entry, now time.Time, result string) {
	req := &ctx.Request.Header
	resp := &ctx.Response
	resp.Reset()
	for _, kv := range e.Header {
		if kv[0] == "Content-Length" {
			continue
		}
		resp.Header.Add(kv[0], kv[1])
	}
	resp.Header.Set("Age", strconv.FormatInt(int64(e.Age(now)/time.Second), 10))
	resp.Header.Set("X-Cache", result)
	if id := req.Peek("X-Request-ID"); len(id) > 0 {
		resp.Header.SetBytesV("X-Request-ID", id)
	}
	etag, lastMod := e.Validators()
	if inm := string(req.Peek("If-None-Match")); inm != "" {
		if httpcache.ETagMatch(inm, etag) {
			notModified(resp)
			return
		}
	} else if httpcache.NotModifiedSince(string(req.Peek("If-Modified-Since")), lastMod) {
		notModified(resp)
		return
	}
	resp.SetStatusCode(e.Status)
	body := e.Body
	if rng := string(req.Peek("Range")); rng != "" && e.Status == fasthttp.StatusOK && req.IsGet() {
		ifRange := string(req.Peek("If-Range"))
		if ifRange == "" || ifRange == etag && !strings.HasPrefix(etag, "W/") || ifRange == lastMod {
			start, end, ok, satisfiable := parseRange(rng, int64(len(body)))
			switch {
			case ok && satisfiable:
				resp.SetStatusCode(fasthttp.StatusPartialContent)
				resp.Header.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(end, 10)+"/"+strconv.Itoa(len(body)))
				body = body[start : end+1]
			case ok:
				resp.SetStatusCode(fasthttp.StatusRequestedRangeNotSatisfiable)
				resp.Header.Set("Content-Range", "bytes */"+strconv.Itoa(len(body)))
				body = nil
			}
		}
	}
	if req.IsHead() {
		resp.SkipBody = true
		resp.Header.SetContentLength(len(body))
		return
	}
	resp.SetBodyRaw(body) // shared with the store, which never modifies it
}

func notModified(resp *fasthttp.Response) {
	resp.SetStatusCode(fasthttp.StatusNotModified)
	resp.SkipBody = true
	for _, k := range []string{"Content-Length", "Content-Encoding", "Content-Range"} {
		resp.Header.Del(k)
	}
}

// parseRange parses one "bytes=a-b" range against size. ok is false for a
// header this cache does not serve (multiple ranges, other units): the
// whole response is sent then, which RFC 9110 allows.
func parseRange(h string, size int64) (start, end int64, ok, satisfiable bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	var err error
	switch {
	case a == "": // suffix: the last b bytes
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, true, false
		}
		return max(size-n, 0), size - 1, true, true
	default:
		if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
			return 0, 0, false, false
		}
		end = size - 1
		if b != "" {
			if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
				return 0, 0, false, false
			}
			end = min(end, size-1)
		}
		if start >= size {
			return 0, 0, true, false
		}
		return start, end, true, true
	}
}

// invalidateAfterWrite drops the stored responses of a URL that a
// successful unsafe request changed, and of its Location and
// Content-Location when they are on the same host (RFC 9111 §4.4).
func (g *Gateway) invalidateAfterWrite(ctx *fasthttp.RequestCtx, c *httpCache, primary string) {
	bg := context.Background()
	keys := []string{primary}
	base, err := url.Parse(primary)
	if err == nil {
		for _, hname := range []string{"Location", "Content-Location"} {
			v := string(ctx.Response.Header.Peek(hname))
			if v == "" {
				continue
			}
			if u, err := base.Parse(v); err == nil && strings.EqualFold(u.Host, base.Host) {
				keys = append(keys, httpcache.Key(u.Scheme, u.Host, u.RequestURI()))
			}
		}
	}
	for _, k := range keys {
		if err := c.store.PurgeURL(bg, k); err != nil {
			g.log.Warn("http cache: invalidation failed", "key", k, "err", err)
		}
	}
}

// refreshInBackground revalidates a stale entry once (stale-while-
// revalidate) on a copy of the request, so that the client's request is
// not held.
func (g *Gateway) refreshInBackground(ctx *fasthttp.RequestCtx, c *httpCache, rt *route, primary, variant string, stale *httpcache.Entry) {
	f, leader := c.join(variant)
	if !leader {
		return // a refresh (or a miss) is already on its way
	}
	bctx := &fasthttp.RequestCtx{}
	req := &fasthttp.Request{}
	ctx.Request.CopyTo(req)
	req.Header.Del("Cache-Control")
	req.Header.Del("Pragma")
	bctx.Init(req, ctx.RemoteAddr(), nil)
	go func() {
		stored := g.fetchAndStore(bctx, c, rt, primary, stale, httpcache.Directives{MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1, StaleWhileRevalidate: -1, StaleIfError: -1})
		drainBody(&bctx.Response)
		c.land(variant, f, stored)
	}()
}

// drainBody reads and closes a streamed body that nobody will send.
func drainBody(resp *fasthttp.Response) {
	if r := resp.BodyStream(); r != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<20))
		_ = resp.CloseBodyStream()
	}
}
