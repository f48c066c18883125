package realtime

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"
)

// Close codes the hub sends. 1000-1015 are RFC 6455's; 4000-4999 are this
// protocol's.
const (
	// CloseNormal: the client asked to close.
	CloseNormal = 1000
	// CloseProtocolError: a WebSocket framing error (unmasked frame,
	// reserved bits, bad continuation, oversized control frame).
	CloseProtocolError = 1002
	// CloseUnsupported: a binary message; the protocol is JSON text.
	CloseUnsupported = 1003
	// CloseBadUTF8: a text message that is not UTF-8.
	CloseBadUTF8 = 1007
	// CloseTooBig: a message larger than Config.MaxMessageSize.
	CloseTooBig = 1009
	// CloseReconnect: the node is draining; reconnect, to another node.
	CloseReconnect = 1012
	// CloseUnauthorized: the token is missing, malformed or forged.
	CloseUnauthorized = 4001
	// CloseTokenExpired: the token has expired; get a new one.
	CloseTokenExpired = 4002
	// CloseSlowClient: the client did not read fast enough and its send
	// queue filled up. Reconnect and recover from the last sequence number.
	CloseSlowClient = 4008
	// CloseNoPong: the client did not answer pings.
	CloseNoPong = 4009
)

// conn is one client WebSocket connection.
type conn struct {
	h      *Hub
	id     uint64
	raw    net.Conn // the socket, for writes and Close
	claims Claims
	anon   bool

	lastRead atomic.Int64 // unix nanos of the last frame read

	mu      sync.Mutex // guards the fields below
	queue   [][]byte   // frames waiting for the writer
	writing bool       // a writer goroutine is running
	closing bool       // a close frame is queued; nothing more is
	closed  bool       // raw is closed
	subs    map[string]*subscription
	done    chan struct{} // closed when raw is closed
}

// subscription is one connection's subscription to a channel; its fields
// are guarded by the connection's mu.
type subscription struct {
	channel    string
	recovering bool // live messages wait in pending until recovery ends
	pending    []pendingPub
	last       Position
}

type pendingPub struct {
	pos   Position
	frame []byte
}

// textFrame returns the bytes of one unmasked WebSocket text frame.
func textFrame(payload []byte) []byte {
	hd := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(payload))}
	b := make([]byte, 0, ws.HeaderSize(hd)+len(payload))
	w := sliceWriter{&b}
	_ = ws.WriteHeader(w, hd)
	return append(b, payload...)
}

func controlFrame(op ws.OpCode, payload []byte) []byte {
	hd := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))}
	b := make([]byte, 0, ws.HeaderSize(hd)+len(payload))
	_ = ws.WriteHeader(sliceWriter{&b}, hd)
	return append(b, payload...)
}

func pingFrame() []byte { return controlFrame(ws.OpPing, nil) }

func closeFrame(code int, reason string) []byte {
	if len(reason) > 120 {
		reason = reason[:120]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	return controlFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusCode(code), reason))
}

type sliceWriter struct{ b *[]byte }

func (w sliceWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

// ServeFastHTTP upgrades the request to a WebSocket connection and serves
// it until it closes. The token is read from the "token" query parameter or
// an "Authorization: Bearer" header. A refused token still completes the
// upgrade and then closes with CloseUnauthorized or CloseTokenExpired and
// the reason, so that browsers can see why.
func (h *Hub) ServeFastHTTP(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() {
		ctx.Error("websocket endpoint: method must be GET", fasthttp.StatusMethodNotAllowed)
		return
	}
	if !headerHasToken(ctx.Request.Header.Peek("Connection"), "upgrade") ||
		!strings.EqualFold(string(ctx.Request.Header.Peek("Upgrade")), "websocket") {
		ctx.Error("websocket endpoint: not a WebSocket upgrade request", fasthttp.StatusBadRequest)
		return
	}
	if string(ctx.Request.Header.Peek("Sec-WebSocket-Version")) != "13" {
		ctx.Response.Header.Set("Sec-WebSocket-Version", "13")
		ctx.Error("websocket endpoint: unsupported Sec-WebSocket-Version (want 13)", fasthttp.StatusUpgradeRequired)
		return
	}
	key := ctx.Request.Header.Peek("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(string(key)); err != nil || len(k) != 16 {
		ctx.Error("websocket endpoint: bad Sec-WebSocket-Key", fasthttp.StatusBadRequest)
		return
	}
	if h.draining.Load() {
		ctx.Error("websocket endpoint: node is draining, connect to another", fasthttp.StatusServiceUnavailable)
		return
	}
	token := string(ctx.QueryArgs().Peek("token"))
	if token == "" {
		if a := string(ctx.Request.Header.Peek("Authorization")); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			token = a[7:]
		}
	}
	claims, anon, refuseCode, refuseReason := h.authenticate(token)

	ctx.SetStatusCode(fasthttp.StatusSwitchingProtocols)
	ctx.Response.Header.Set("Upgrade", "websocket")
	ctx.Response.Header.Set("Connection", "Upgrade")
	ctx.Response.Header.Set("Sec-WebSocket-Accept", acceptKey(key))
	ctx.Hijack(func(nc net.Conn) {
		raw := nc
		if u, ok := nc.(interface{ UnsafeConn() net.Conn }); ok {
			raw = u.UnsafeConn()
		}
		if refuseCode != 0 {
			h.m.refused.Add(1)
			_ = raw.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
			_, _ = raw.Write(closeFrame(refuseCode, refuseReason))
			// Give the client a moment to read the close frame before the
			// socket goes away, without waiting for its reply for long.
			_ = raw.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = io.Copy(io.Discard, io.LimitReader(nc, 1<<10))
			_ = raw.Close()
			return
		}
		if h.cfg.ServerKeepsHijackedConns {
			// A WebSocket client sends nothing before the 101 response
			// (RFC 6455, 4.1), so the server's read buffer holds nothing
			// of this connection: read the socket itself and let the
			// server free its request context and buffer.
			go h.serveConn(raw, raw, claims, anon)
			return
		}
		h.serveConn(nc, raw, claims, anon)
	})
}

// authenticate checks token; a non-zero code means refuse with it.
func (h *Hub) authenticate(token string) (c Claims, anon bool, code int, reason string) {
	if token == "" {
		if h.cfg.AllowAnonymous {
			return Claims{Channels: h.cfg.AnonymousChannels}, true, 0, ""
		}
		return Claims{}, false, CloseUnauthorized, "token required"
	}
	if len(h.cfg.Secret) == 0 {
		return Claims{}, false, CloseUnauthorized, "invalid token: tokens are not accepted here"
	}
	c, err := ParseToken(h.cfg.Secret, token, time.Now())
	switch {
	case err == nil:
		return c, false, 0, ""
	case errors.Is(err, ErrTokenExpired):
		return Claims{}, false, CloseTokenExpired, err.Error()
	default:
		return Claims{}, false, CloseUnauthorized, "invalid token: " + err.Error()
	}
}

func acceptKey(key []byte) string {
	s := sha1.New()
	s.Write(key)
	s.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(s.Sum(nil))
}

// headerHasToken reports whether the comma-separated header value v
// contains token, case-insensitively.
func headerHasToken(v []byte, token string) bool {
	for _, part := range strings.Split(string(v), ",") {
		if strings.EqualFold(strings.TrimSpace(part), token) {
			return true
		}
	}
	return false
}

// serveConn runs the connection: it registers it, reads its frames until
// it ends, and unregisters it. r reads the connection (through the HTTP
// server's buffer); raw is the socket.
func (h *Hub) serveConn(r io.Reader, raw net.Conn, claims Claims, anon bool) {
	c := &conn{h: h, id: h.nextConnID.Add(1), raw: raw, claims: claims, anon: anon, done: make(chan struct{})}
	c.lastRead.Store(time.Now().UnixNano())
	h.mu.Lock()
	if h.draining.Load() {
		h.mu.Unlock()
		_ = raw.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
		_, _ = raw.Write(closeFrame(CloseReconnect, "reconnect"))
		_ = raw.Close()
		return
	}
	h.conns[c] = struct{}{}
	if !anon {
		us := h.users[claims.User]
		if us == nil {
			us = map[*conn]struct{}{}
			h.users[claims.User] = us
		}
		us[c] = struct{}{}
	}
	h.mu.Unlock()
	h.m.accepted.Add(1)

	code, reason := c.readLoop(r)
	c.closeWith(code, reason)
	// The HTTP server closes the socket when this returns: let the writer
	// send what is queued (the close frame last) first, within WriteTimeout.
	select {
	case <-c.done:
	case <-time.After(h.cfg.WriteTimeout):
		c.kill()
	}
	h.unregister(c)
	c.kill()
}

// unregister removes c and its subscriptions from the hub.
func (h *Hub) unregister(c *conn) {
	c.mu.Lock()
	subs := c.subs
	c.subs = nil
	c.mu.Unlock()
	h.mu.Lock()
	delete(h.conns, c)
	if !c.anon {
		if us := h.users[c.claims.User]; us != nil {
			delete(us, c)
			if len(us) == 0 {
				delete(h.users, c.claims.User)
			}
		}
	}
	for ch := range subs {
		h.removeSubLocked(ch, c)
	}
	h.mu.Unlock()
	if h.presence != nil && len(subs) > 0 {
		chans := make([]string, 0, len(subs))
		for ch := range subs {
			chans = append(chans, ch)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h.presence.remove(ctx, c, chans)
		cancel()
	}
}

func (h *Hub) removeSubLocked(ch string, c *conn) {
	if subs := h.channels[ch]; subs != nil {
		delete(subs, c)
		if len(subs) == 0 {
			delete(h.channels, ch)
		}
	}
}

// readLoop reads frames until the connection ends, and returns the close
// code and reason to send.
func (c *conn) readLoop(r io.Reader) (int, string) {
	var msg []byte // the message being assembled from fragments
	var op ws.OpCode
	hb := make([]byte, ws.MaxHeaderSize)
	for {
		hd, err := ws.ReadHeaderBuffer(r, hb[:0])
		if err != nil {
			if errors.Is(err, ws.ErrHeaderLengthUnexpected) || errors.Is(err, ws.ErrHeaderLengthMSB) {
				return CloseProtocolError, "bad frame header: " + err.Error()
			}
			return 0, "" // the connection ended
		}
		c.lastRead.Store(time.Now().UnixNano())
		switch {
		case hd.Rsv != 0:
			return CloseProtocolError, "reserved bits set (no extension negotiated)"
		case !hd.Masked:
			return CloseProtocolError, "client frame not masked"
		case hd.OpCode.IsReserved():
			return CloseProtocolError, "reserved opcode"
		}
		if hd.OpCode.IsControl() {
			if hd.Length > 125 || !hd.Fin {
				return CloseProtocolError, "control frame fragmented or longer than 125 bytes"
			}
			p := make([]byte, hd.Length)
			if _, err := io.ReadFull(r, p); err != nil {
				return 0, ""
			}
			ws.Cipher(p, hd.Mask, 0)
			switch hd.OpCode {
			case ws.OpPing:
				c.send(controlFrame(ws.OpPong, p))
			case ws.OpClose:
				code, reason := ws.ParseCloseFrameData(p)
				if code == 0 || code == 1005 {
					code = CloseNormal
				}
				_ = reason
				return int(code), ""
			}
			continue
		}
		if hd.OpCode == ws.OpContinuation {
			if op == 0 {
				return CloseProtocolError, "continuation frame without a message"
			}
		} else {
			if op != 0 {
				return CloseProtocolError, "new message inside a fragmented one"
			}
			op = hd.OpCode
		}
		if int64(len(msg))+hd.Length > int64(c.h.cfg.MaxMessageSize) {
			return CloseTooBig, "message too big"
		}
		n := len(msg)
		msg = append(msg, make([]byte, hd.Length)...)
		if _, err := io.ReadFull(r, msg[n:]); err != nil {
			return 0, ""
		}
		ws.Cipher(msg[n:], hd.Mask, 0)
		if !hd.Fin {
			continue
		}
		if op == ws.OpBinary {
			return CloseUnsupported, "binary messages are not supported; send JSON text"
		}
		if !utf8.Valid(msg) {
			return CloseBadUTF8, "text message is not UTF-8"
		}
		c.h.m.in.Add(1)
		// Handle on a short-lived goroutine: what handling needs (JSON,
		// broker and Redis calls) would otherwise grow this goroutine's
		// stack, which lives as long as the connection.
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.handle(msg)
		}()
		<-done
		op = 0
		if cap(msg) > 4<<10 {
			msg = nil
		} else {
			msg = msg[:0]
		}
	}
}

// send queues frame; a full queue closes the connection as a slow client.
// It never blocks.
func (c *conn) send(frame []byte) {
	c.mu.Lock()
	ok := c.enqueueLocked(frame)
	c.mu.Unlock()
	if !ok {
		c.slow()
	}
}

// enqueueLocked queues frame and reports false when the queue is full.
func (c *conn) enqueueLocked(frame []byte) bool {
	if c.closing {
		return true
	}
	if len(c.queue) >= c.h.cfg.SendQueue {
		return false
	}
	c.queue = append(c.queue, frame)
	c.h.m.out.Add(1)
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	return true
}

func (c *conn) slow() {
	c.h.m.slow.Add(1)
	c.closeWith(CloseSlowClient, "slow client: send queue full")
}

// sendPublication queues a channel message frame for subscription s,
// holding it back while s is recovering and dropping duplicates.
func (c *conn) sendPublication(s *subscription, pos Position, frame []byte) {
	c.mu.Lock()
	var ok bool
	switch {
	case s.recovering:
		ok = len(s.pending) < c.h.cfg.SendQueue
		if ok {
			s.pending = append(s.pending, pendingPub{pos, frame})
		}
	case pos.Seq != 0 && pos.Epoch == s.last.Epoch && pos.Seq <= s.last.Seq:
		ok = true // already sent from the history
	default:
		if pos.Seq != 0 {
			s.last = pos
		}
		ok = c.enqueueLocked(frame)
	}
	c.mu.Unlock()
	if !ok {
		c.slow()
	}
}

// closeWith queues a close frame with code and reason (code 0: none, the
// socket just closes) after what is queued, and stops queueing.
func (c *conn) closeWith(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.closing = true
	if code == CloseSlowClient {
		// The queue is what the client could not take: drop it.
		c.queue = c.queue[:0]
	}
	if code != 0 {
		c.queue = append(c.queue, closeFrame(code, reason))
	}
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
}

// kill closes the socket at once.
func (c *conn) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	c.closeRawLocked()
}

func (c *conn) closeRawLocked() {
	if !c.closed {
		c.closed = true
		_ = c.raw.Close()
		close(c.done)
	}
}

// writeLoop writes queued frames until the queue is empty, then exits; a
// new one starts with the next frame. After the close frame it closes the
// socket. Frames are written as they are (one write, or one writev for a
// batch), without a buffer, so an idle connection holds none.
func (c *conn) writeLoop() {
	var batch [][]byte
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.closed {
			c.writing = false
			if c.closing {
				c.closeRawLocked()
			}
			c.queue = nil
			c.mu.Unlock()
			return
		}
		batch, c.queue = c.queue, batch[:0]
		c.mu.Unlock()
		_ = c.raw.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
		var err error
		if len(batch) == 1 {
			_, err = c.raw.Write(batch[0])
		} else {
			bufs := net.Buffers(batch)
			_, err = bufs.WriteTo(c.raw)
		}
		clear(batch)
		if err != nil {
			// A write that timed out is a client too slow to take one
			// batch within WriteTimeout; nothing more can be framed.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.h.m.slow.Add(1)
			}
			c.mu.Lock()
			c.closing = true
			c.writing = false
			c.queue = nil
			c.closeRawLocked()
			c.mu.Unlock()
			return
		}
	}
}
