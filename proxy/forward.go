package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scaleout/scaleout/balancer"
)

// bodyMode says how the request body is sent to a backend.
type bodyMode uint8

const (
	bodyNone     bodyMode = iota // no body
	bodyBytes                    // held in exchange.body: can be sent again
	bodyStreamed                 // read from the client while it is sent: once only
)

// exchange is the per-request state of Serve. Exchanges are pooled; nothing
// in one refers to the RequestCtx after Serve returns.
type exchange struct {
	tokbuf  []byte
	tokens  [][2]int
	scratch []byte
	reqID   []byte
	body    []byte
	copyBuf []byte
	tried   []*balancer.Backend
	filter  BodyFilter

	start      time.Time
	up         *upstream
	client     netip.Addr
	mode       bodyMode
	bodyLen    int
	bodyStream io.Reader
	consumed   bool // a streamed body was (partly) read
	isHead     bool
	http10     bool // the client spoke HTTP/1.0: no chunked responses
	idem       bool
	lastStatus int
	tries      int
}

func (p *Proxy) acquireExchange() *exchange {
	if v := p.exchanges.Get(); v != nil {
		return v.(*exchange)
	}
	return &exchange{tried: make([]*balancer.Backend, 0, 4)}
}

func (p *Proxy) releaseExchange(x *exchange) {
	clear(x.tried)
	x.tried = x.tried[:0]
	x.up = nil
	x.filter = nil
	x.reqID = x.reqID[:0] // never hand one request's ID to the next
	x.bodyStream = nil
	x.consumed = false
	x.lastStatus = 0
	x.tries = 0
	if cap(x.body) > p.cfg.Retries.ReplayBodyBytes {
		x.body = nil
	}
	x.body = x.body[:0]
	p.exchanges.Put(x)
}

// Serve forwards the request in ctx to a backend of pool, the pool of the
// upstream named upstream, and writes the backend's response to ctx; a
// WebSocket upgrade is passed through and relayed until either side closes.
// Serve takes ctx over: it rewrites the request's headers, and the response
// body may still be streaming from the backend after Serve returns. It
// never panics on bad input and never waits longer than the configured
// timeouts for a backend to connect or to start its answer.
//
// With no backend to take the request the client gets 503 with a short
// body naming the upstream and Retry-After: 1; when every try failed, 502
// (connection failures) or 504 (timeouts).
func (p *Proxy) Serve(ctx *fasthttp.RequestCtx, upstream string, pool *balancer.Pool) {
	p.ServeFiltered(ctx, upstream, pool, nil)
}

// BodyFilter may replace a streamed response body before the client gets
// it: it is called once the backend's response header is in h, with the
// body stream and its size (-1: unknown), and returns the body to send and
// its size. The returned reader takes the stream over: if it is an
// io.Closer, its Close must close body, which returns the backend
// connection. Buffered bodies (see Config.BufferResponseBytes) are not
// passed through the filter; they are complete in ctx.Response when Serve
// returns. A filter must not keep h past its call.
type BodyFilter func(h *fasthttp.ResponseHeader, body io.Reader, size int) (io.Reader, int)

// ServeFiltered is Serve with a filter for streamed response bodies; a nil
// filter is Serve.
func (p *Proxy) ServeFiltered(ctx *fasthttp.RequestCtx, upstream string, pool *balancer.Pool, filter BodyFilter) {
	x := p.acquireExchange()
	defer p.releaseExchange(x)
	x.filter = filter
	x.start = time.Now()
	x.up = p.upstream(upstream)
	x.up.budget.deposit()
	x.client = p.ClientAddr(ctx)
	h := &ctx.Request.Header
	x.isHead = h.IsHead()
	x.http10 = !h.IsHTTP11()
	x.idem = idempotent(h)

	if ambiguousFraming(h) {
		x.reqID = newRequestID(x.reqID[:0])
		x.up.errors[failAmbiguous].Inc()
		p.fail(ctx, x, failAmbiguous, nil)
		return
	}
	ws := isWebSocket(h)
	p.prepareRequest(ctx, x, ws)
	if ws {
		p.serveWebSocket(ctx, x, pool)
		return
	}
	if k := p.prepareBody(ctx, x); k != failNone {
		x.up.errors[k].Inc()
		p.fail(ctx, x, k, nil)
		return
	}

	var last failKind
	var lastBackend *balancer.Backend
	for try := 0; ; try++ {
		b, err := pool.Pick(x.client, x.tried)
		if err != nil {
			if try == 0 {
				last = failNoBackend
				x.up.errors[failNoBackend].Inc()
			}
			break
		}
		x.tried = append(x.tried, b)
		x.tries++
		k := p.attempt(ctx, x, b, pool, try)
		if k == failNone {
			return
		}
		last, lastBackend = k, b
		if !p.mayRetry(x, k, try) {
			break
		}
		x.up.retries.Inc()
	}
	p.fail(ctx, x, last, lastBackend)
}

// mayRetry decides whether a request whose try failed with k goes to
// another backend (see RetryConfig).
func (p *Proxy) mayRetry(x *exchange, k failKind, try int) bool {
	if try >= p.cfg.Retries.Max {
		return false
	}
	if k.notSent() {
		return true
	}
	switch k {
	case failSend, failRecv, failTimeout, failBadResponse:
		return x.replayable() && x.up.budget.take()
	case failStatus:
		return true // attempt already took the budget
	}
	return false
}

// replayable reports whether a request that reached a backend may be sent
// to another one.
func (x *exchange) replayable() bool {
	return x.idem && x.mode != bodyStreamed
}

// prepareBody decides how the request body travels, enforcing the body
// limit before any backend is involved.
func (p *Proxy) prepareBody(ctx *fasthttp.RequestCtx, x *exchange) failKind {
	req := &ctx.Request
	cl := req.Header.ContentLength()
	x.bodyStream = req.BodyStream()
	x.mode, x.bodyLen = bodyNone, 0
	max := p.cfg.MaxRequestBodyBytes
	switch {
	case cl == -1:
		if x.bodyStream == nil {
			return failClientBody
		}
		x.mode, x.bodyLen = bodyStreamed, -1
		req.Header.SetContentLength(-1) // Transfer-Encoding: chunked again
	case cl > 0:
		if max > 0 && int64(cl) > max {
			return failBodyTooLarge
		}
		if x.bodyStream == nil {
			x.body = append(x.body[:0], req.Body()...)
			if len(x.body) != cl {
				return failClientBody
			}
			x.mode = bodyBytes
			return failNone
		}
		if x.idem && cl <= p.cfg.Retries.ReplayBodyBytes {
			if cap(x.body) < cl {
				x.body = make([]byte, cl)
			}
			x.body = x.body[:cl]
			if _, err := io.ReadFull(x.bodyStream, x.body); err != nil {
				return failClientBody
			}
			x.mode = bodyBytes
			return failNone
		}
		x.mode, x.bodyLen = bodyStreamed, cl
	}
	return failNone
}

// attempt sends the request to b once and, on success, relays the response
// into ctx (buffered, or as a stream that finishes after Serve returns). It
// calls pool.Done for b exactly once, now or when the stream ends.
func (p *Proxy) attempt(ctx *fasthttp.RequestCtx, x *exchange, b *balancer.Backend, pool *balancer.Pool, try int) failKind {
	req, resp := &ctx.Request, &ctx.Response
	tryStart := time.Now()
	fail := func(k failKind) failKind {
		pool.Done(b, time.Since(tryStart), k.outcome())
		x.up.errors[k].Inc()
		return k
	}
	if x.mode == bodyStreamed && x.consumed {
		// Only reachable if a retry rule is wrong: never send a body twice.
		return fail(failSend)
	}
	if p.cfg.RewriteHost {
		req.Header.SetHost(b.URL.Host)
	}
	hc := p.client(b).hc

	// A reused keep-alive connection may have been closed by the backend
	// while idle. Writing a request to it would fail after the request
	// might have been received, so it is checked first (one non-blocking
	// peek): always for requests that may not be sent again, and for the
	// others once the connection has been idle a while (a connection busy a
	// moment ago is almost surely alive, and if not, the request can be
	// retried).
	replayable := x.replayable()
	cc, err := hc.AcquireConn(0, false)
	for i := 0; err == nil && needsCheck(cc.LastUseTime(), replayable) && !usable(cc.Conn()); i++ {
		hc.CloseConn(cc)
		if i == 64 {
			err = errors.New("too many dead keep-alive connections")
			break
		}
		cc, err = hc.AcquireConn(0, false)
	}
	if err != nil {
		return fail(classifyDial(err))
	}
	conn := cc.Conn()

	rht := p.cfg.ResponseHeaderTimeout
	if x.mode == bodyStreamed {
		_ = conn.SetWriteDeadline(time.Time{})
	} else {
		_ = conn.SetWriteDeadline(tryStart.Add(rht))
	}
	bw := hc.AcquireWriter(conn)
	k := x.writeRequest(bw, req, p.cfg.MaxRequestBodyBytes)
	hc.ReleaseWriter(bw)
	if k != failNone {
		hc.CloseConn(cc)
		return fail(k)
	}

	_ = conn.SetReadDeadline(time.Now().Add(rht))
	br := hc.AcquireReader(conn)
	code, err := readResponseHeader(&resp.Header, br)
	if err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		resp.Reset()
		return fail(classifyRead(err))
	}
	keep := !resp.Header.ConnectionClose()
	resp.Header.ResetConnectionClose()
	noBody := x.isHead || code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified || code < 200
	cl := resp.Header.ContentLength()
	buffered := noBody || (cl >= 0 && cl <= p.cfg.BufferResponseBytes)

	if code == fasthttp.StatusSwitchingProtocols {
		// Upgrade was not offered, so the backend is broken.
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		resp.Reset()
		return fail(failBadResponse)
	}

	if (code == fasthttp.StatusBadGateway || code == fasthttp.StatusServiceUnavailable || code == fasthttp.StatusGatewayTimeout) &&
		try < p.cfg.Retries.Max && x.replayable() && x.up.budget.take() {
		// Another backend may do better: drop this answer.
		if buffered && !noBody {
			if err := resp.ReadBody(br, 0); err != nil {
				keep = false
			}
		} else if !buffered {
			keep = false
		}
		hc.ReleaseReader(br)
		if keep {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
		x.lastStatus = code
		resp.Reset()
		return fail(failStatus)
	}

	if buffered {
		if !noBody {
			if err := resp.ReadBody(br, 0); err != nil {
				hc.ReleaseReader(br)
				hc.CloseConn(cc)
				resp.Reset()
				return fail(failRecv)
			}
		}
		hc.ReleaseReader(br)
		if keep {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
		x.prepareResponse(&resp.Header)
		outcome := balancer.Success
		if code >= 500 {
			outcome = balancer.ServerError
		}
		pool.Done(b, time.Since(tryStart), outcome)
		p.finish(ctx, x, b, code, int64(len(resp.Body())))
		return failNone
	}

	// Stream the body: the server reads it from s while writing to the
	// client, after Serve returns; s returns the connection and reports to
	// the pool when it is closed.
	_ = conn.SetReadDeadline(time.Time{})
	s := &bodyStream{
		p: p, br: br, remaining: int64(cl), keep: keep && cl != -2,
		pool: pool, b: b, up: x.up, start: x.start, tryStart: tryStart, code: code,
	}
	s.release = func(reuse bool) {
		hc.ReleaseReader(br)
		if reuse {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
	}
	if cl == -1 {
		s.initChunked()
	}
	if p.cfg.AccessLog != nil {
		s.rec.copyFrom(ctx, x, b)
	}
	x.prepareResponse(&resp.Header)
	if cl < 0 && x.http10 {
		p.streamToHTTP10(ctx, s)
		return failNone
	}
	size := cl
	if cl < 0 {
		size = -1
	}
	var body io.Reader = s
	if x.filter != nil {
		body, size = x.filter(&resp.Header, s, size)
	}
	resp.SetBodyStream(body, size)
	resp.ImmediateHeaderFlush = true
	return failNone
}

// streamToHTTP10 sends a body of unknown length to an HTTP/1.0 client,
// which does not know chunked encoding: the header without framing, then
// the body until its end, then the connection is closed. fasthttp always
// chunks such bodies, so this writes on the hijacked connection.
func (p *Proxy) streamToHTTP10(ctx *fasthttp.RequestCtx, s *bodyStream) {
	resp := &ctx.Response
	resp.Header.SetConnectionClose()
	head := append([]byte(nil), resp.Header.Header()...)
	resp.Reset()
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		_, err := c.Write(head)
		if err == nil {
			_, err = io.Copy(c, s)
		}
		_ = s.CloseWithError(err)
	})
}

// idleCheckAfter is how long a keep-alive connection must have been idle
// before an idempotent request checks it.
const idleCheckAfter = time.Second

// needsCheck reports whether a connection last used at lastUse must be
// checked before a request is written to it (zero lastUse: a new one).
func needsCheck(lastUse time.Time, replayable bool) bool {
	if lastUse.IsZero() {
		return false
	}
	return !replayable || time.Since(lastUse) > idleCheckAfter
}

// readResponseHeader reads a response header, skipping interim 1xx
// responses other than 101.
func readResponseHeader(h *fasthttp.ResponseHeader, br *bufio.Reader) (int, error) {
	for range 8 {
		if err := h.Read(br); err != nil {
			return 0, err
		}
		code := h.StatusCode()
		if code >= 200 || code == fasthttp.StatusSwitchingProtocols {
			return code, nil
		}
	}
	return 0, errors.New("too many interim responses")
}

func classifyRead(err error) failKind {
	if isTimeout(err) {
		return failTimeout
	}
	var ne net.Error
	var se *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &se):
		return failBadResponse
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne):
		return failRecv
	}
	if _, ok := err.(fasthttp.ErrNothingRead); ok {
		return failRecv
	}
	return failBadResponse
}

// writeRequest writes the request header and body to a backend.
func (x *exchange) writeRequest(bw *bufio.Writer, req *fasthttp.Request, max int64) failKind {
	if err := req.Header.Write(bw); err != nil {
		return failSend
	}
	switch x.mode {
	case bodyBytes:
		if _, err := bw.Write(x.body); err != nil {
			return failSend
		}
	case bodyStreamed:
		x.consumed = true
		if k := x.copyBody(bw, max); k != failNone {
			return k
		}
	}
	if err := bw.Flush(); err != nil {
		return failSend
	}
	return failNone
}

// copyBody streams the client's body to the backend, flushing after every
// read so that the backend sees data as it comes. Chunked bodies are
// re-chunked and counted against max.
func (x *exchange) copyBody(bw *bufio.Writer, max int64) failKind {
	if x.copyBuf == nil {
		x.copyBuf = make([]byte, 32<<10)
	}
	buf := x.copyBuf
	chunked := x.bodyLen < 0
	remaining := int64(x.bodyLen)
	var total int64
	for chunked || remaining > 0 {
		r := buf
		if !chunked && int64(len(r)) > remaining {
			r = r[:remaining]
		}
		n, rerr := x.bodyStream.Read(r)
		if n > 0 {
			total += int64(n)
			if chunked {
				if max > 0 && total > max {
					return failBodyTooLarge
				}
				var hexbuf [16]byte
				if _, err := bw.Write(strconv.AppendInt(hexbuf[:0], int64(n), 16)); err != nil {
					return failSend
				}
				if _, err := bw.WriteString("\r\n"); err != nil {
					return failSend
				}
			} else {
				remaining -= int64(n)
			}
			if _, err := bw.Write(r[:n]); err != nil {
				return failSend
			}
			if chunked {
				if _, err := bw.WriteString("\r\n"); err != nil {
					return failSend
				}
			}
			if err := bw.Flush(); err != nil {
				return failSend
			}
		}
		if rerr != nil {
			if rerr == io.EOF && (chunked || remaining == 0) {
				break
			}
			return failClientBody
		}
	}
	if chunked {
		if _, err := bw.WriteString("0\r\n\r\n"); err != nil {
			return failSend
		}
	}
	return failNone
}

// fail answers the client when no try succeeded.
func (p *Proxy) fail(ctx *fasthttp.RequestCtx, x *exchange, k failKind, b *balancer.Backend) {
	resp := &ctx.Response
	resp.Reset()
	code := k.status()
	if k == failStatus && x.lastStatus != 0 {
		code = x.lastStatus
	}
	resp.SetStatusCode(code)
	resp.Header.SetContentType("text/plain; charset=utf-8")
	resp.Header.SetBytesV(hRequestID, x.reqID)
	var msg string
	switch k {
	case failNoBackend:
		resp.Header.Set(hRetryAfter, "1")
		msg = "no healthy backend for upstream "
	case failConnTimeout, failTimeout:
		msg = "gateway timeout: no answer in time from upstream "
	case failBodyTooLarge:
		msg = "request body too large for upstream "
		resp.SetConnectionClose()
	case failClientBody:
		msg = "could not read the request body for upstream "
		resp.SetConnectionClose()
	case failAmbiguous:
		msg = "ambiguous request framing or folded header lines, refused for upstream "
		resp.SetConnectionClose()
	case failStatus:
		msg = "every backend failed for upstream "
	default:
		msg = "bad gateway: could not get an answer from upstream "
	}
	resp.AppendBodyString(msg)
	resp.AppendBodyString(x.up.name)
	resp.AppendBodyString("\n")
	p.finish(ctx, x, b, code, int64(len(resp.Body())))
}

// finish counts and logs a request whose response is complete in ctx.
func (p *Proxy) finish(ctx *fasthttp.RequestCtx, x *exchange, b *balancer.Backend, code int, bytes int64) {
	took := time.Since(x.start)
	x.up.count(code)
	x.up.duration.Observe(took.Seconds())
	if p.cfg.AccessLog == nil {
		return
	}
	var rec logRecord
	rec.copyFrom(ctx, x, b)
	rec.log(p.cfg.AccessLog, code, took, bytes)
}

// logRecord is what an access log line says about a request, copied out of
// the RequestCtx so that it can be logged after the handler returned.
type logRecord struct {
	method, path, reqID []byte
	upstream, backend   string
	client              netip.Addr
	tries               int
}

func (r *logRecord) copyFrom(ctx *fasthttp.RequestCtx, x *exchange, b *balancer.Backend) {
	h := &ctx.Request.Header
	r.method = append(r.method[:0], h.Method()...)
	uri := h.RequestURI()
	for i, c := range uri {
		if c == '?' {
			uri = uri[:i]
			break
		}
	}
	r.path = append(r.path[:0], uri...)
	r.reqID = append(r.reqID[:0], x.reqID...)
	r.upstream = x.up.name
	r.backend = ""
	if b != nil {
		r.backend = b.ID
	}
	r.client = x.client
	r.tries = x.tries
}

func (r *logRecord) log(l *slog.Logger, code int, took time.Duration, bytes int64) {
	if !l.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	l.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("method", string(r.method)),
		slog.String("path", string(r.path)),
		slog.Int("status", code),
		slog.String("upstream", r.upstream),
		slog.String("backend", r.backend),
		slog.Duration("duration", took),
		slog.Int64("bytes", bytes),
		slog.String("request_id", string(r.reqID)),
		slog.String("client", r.client.String()),
		slog.Int("tries", r.tries),
	)
}
