package proxy

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// Header names as fasthttp normalizes them.
const (
	hConnection      = "Connection"
	hKeepAlive       = "Keep-Alive"
	hProxyConnection = "Proxy-Connection"
	hProxyAuthz      = "Proxy-Authorization"
	hProxyAuthn      = "Proxy-Authenticate"
	hTE              = "Te"
	hTrailer         = "Trailer"
	hTransferEnc     = "Transfer-Encoding"
	hUpgrade         = "Upgrade"
	hExpect          = "Expect"
	hXFF             = "X-Forwarded-For"
	hXFProto         = "X-Forwarded-Proto"
	hXFHost          = "X-Forwarded-Host"
	hForwarded       = "Forwarded"
	hRequestID       = "X-Request-Id"
	hRetryAfter      = "Retry-After"
)

var (
	strHTTP11  = []byte("HTTP/1.1")
	strHTTP    = []byte("http")
	strHTTPS   = []byte("https")
	strComma   = []byte(", ")
	strUpgrade = []byte("Upgrade")
	strWS      = []byte("websocket")
)

// ClientAddr returns the address of the client that sent the request: the
// TCP peer, or, when the peer is one of Config.TrustedProxies, the
// right-most address of X-Forwarded-For that is not a trusted proxy (the
// left-most one if all are trusted). A malformed entry ends the walk: the
// address to its right is used. It returns the zero Addr if the peer is not
// a TCP address.
func (p *Proxy) ClientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	peer := peerAddr(ctx)
	if !p.trusted(peer) {
		return peer
	}
	client := peer
	for _, v := range reverseValues(ctx.Request.Header.PeekAll(hXFF)) {
		for end := len(v); end > 0; {
			start := bytes.LastIndexByte(v[:end], ',') + 1
			a, err := netip.ParseAddr(string(bytes.TrimSpace(v[start:end])))
			if err != nil {
				return client
			}
			client = a.Unmap()
			if !p.trusted(client) {
				return client
			}
			end = start - 1
		}
	}
	return client
}

// reverseValues reverses vs in place, so that header lines are walked from
// the last one.
func reverseValues(vs [][]byte) [][]byte {
	for i, j := 0, len(vs)-1; i < j; i, j = i+1, j-1 {
		vs[i], vs[j] = vs[j], vs[i]
	}
	return vs
}

func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func (p *Proxy) trusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, pr := range p.cfg.TrustedProxies {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// connTokens copies the field names listed in the Connection header lines
// into x.tokens (as offsets into x.tokbuf), leaving out close, keep-alive and
// upgrade, and the framing fields that a Connection header must not remove.
func (x *exchange) connTokens(lines [][]byte) {
	x.tokbuf = x.tokbuf[:0]
	x.tokens = x.tokens[:0]
	for _, line := range lines {
		for len(line) > 0 {
			var tok []byte
			if i := bytes.IndexByte(line, ','); i >= 0 {
				tok, line = line[:i], line[i+1:]
			} else {
				tok, line = line, nil
			}
			tok = bytes.TrimSpace(tok)
			if len(tok) == 0 || bytes.EqualFold(tok, []byte("close")) ||
				bytes.EqualFold(tok, []byte("keep-alive")) || bytes.EqualFold(tok, strUpgrade) ||
				bytes.EqualFold(tok, []byte("Content-Length")) || bytes.EqualFold(tok, []byte("Host")) {
				continue
			}
			start := len(x.tokbuf)
			x.tokbuf = append(x.tokbuf, tok...)
			x.tokens = append(x.tokens, [2]int{start, len(x.tokbuf)})
		}
	}
}

// prepareRequest rewrites the client's request header in place into the one
// sent to backends: hop-by-hop fields out (Upgrade kept for a WebSocket
// handshake), forwarding fields set, request ID kept or created. The fields
// the gateway adds are added after the client's Connection header has been
// applied, so that it cannot remove them.
func (p *Proxy) prepareRequest(ctx *fasthttp.RequestCtx, x *exchange, websocket bool) {
	h := &ctx.Request.Header
	x.connTokens(h.PeekAll(hConnection))
	for _, t := range x.tokens {
		h.DelBytes(x.tokbuf[t[0]:t[1]])
	}
	h.Del(hConnection)
	h.Del(hKeepAlive)
	h.Del(hProxyConnection)
	h.Del(hProxyAuthz)
	h.Del(hTE)
	h.Del(hTrailer)
	h.Del(hTransferEnc)
	h.Del(hExpect) // the server answered it already
	if websocket {
		h.Set(hConnection, "Upgrade")
	} else {
		h.Del(hUpgrade)
	}
	h.SetProtocolBytes(strHTTP11)
	h.SetNoDefaultContentType(true)
	if rt := h.RequestURI(); len(rt) > 0 && rt[0] != '/' && rt[0] != '*' {
		// absolute-form: backends get origin-form.
		u := ctx.Request.URI()
		u.DisablePathNormalizing = true
		h.SetRequestURIBytes(u.RequestURI())
	}

	peer := peerAddr(ctx)
	trusted := p.trusted(peer)
	x.scratch = x.scratch[:0]
	if trusted {
		for _, v := range h.PeekAll(hXFF) {
			if len(x.scratch) > 0 {
				x.scratch = append(x.scratch, strComma...)
			}
			x.scratch = append(x.scratch, v...)
		}
		if len(x.scratch) > 0 {
			x.scratch = append(x.scratch, strComma...)
		}
	} else {
		h.Del(hForwarded)
	}
	if peer.IsValid() {
		x.scratch = peer.AppendTo(x.scratch)
	}
	if len(x.scratch) > 0 {
		h.SetBytesV(hXFF, x.scratch)
	} else {
		h.Del(hXFF)
	}
	if !trusted || len(h.Peek(hXFProto)) == 0 {
		if ctx.IsTLS() {
			h.SetBytesV(hXFProto, strHTTPS)
		} else {
			h.SetBytesV(hXFProto, strHTTP)
		}
	}
	if len(h.Host()) == 0 {
		// An HTTP/1.0 client may send no Host; backends need one.
		h.SetHost(ctx.LocalAddr().String())
	}
	if !trusted || len(h.Peek(hXFHost)) == 0 {
		if host := h.Host(); len(host) > 0 {
			h.SetBytesV(hXFHost, host)
		} else {
			h.Del(hXFHost)
		}
	}
	if id := h.Peek(hRequestID); saneRequestID(id) {
		x.reqID = append(x.reqID[:0], id...)
	} else {
		x.reqID = newRequestID(x.reqID[:0])
		h.SetBytesV(hRequestID, x.reqID)
	}
}

// prepareResponse removes hop-by-hop fields from a backend's response and
// returns the request ID to the client.
func (x *exchange) prepareResponse(h *fasthttp.ResponseHeader) {
	x.connTokens(h.PeekAll(hConnection))
	for _, t := range x.tokens {
		h.DelBytes(x.tokbuf[t[0]:t[1]])
	}
	h.Del(hConnection)
	h.Del(hKeepAlive)
	h.Del(hProxyConnection)
	h.Del(hProxyAuthn)
	h.Del(hTE)
	h.Del(hTrailer)
	h.Del(hTransferEnc)
	h.Del(hUpgrade)
	h.SetProtocol(strHTTP11) // the client talks to the gateway, which speaks 1.1
	h.SetNoDefaultContentType(true)
	h.SetBytesV(hRequestID, x.reqID)
}

// saneRequestID accepts 1 to 128 visible characters that are safe to log
// and to repeat in a header: letters, digits and -._:+/=@.
func saneRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == ':', c == '+', c == '/', c == '=', c == '@':
		default:
			return false
		}
	}
	return true
}

// newRequestID appends 32 random hex digits (128 bits) to dst.
func newRequestID(dst []byte) []byte {
	const hex = "0123456789abcdef"
	for range 2 {
		v := rand.Uint64()
		for range 16 {
			dst = append(dst, hex[v&0xf])
			v >>= 4
		}
	}
	return dst
}

// isWebSocket reports whether the request asks to upgrade to WebSocket.
func isWebSocket(h *fasthttp.RequestHeader) bool {
	if !bytes.EqualFold(bytes.TrimSpace(h.Peek(hUpgrade)), strWS) {
		return false
	}
	for _, line := range h.PeekAll(hConnection) {
		for len(line) > 0 {
			var tok []byte
			if i := bytes.IndexByte(line, ','); i >= 0 {
				tok, line = line[:i], line[i+1:]
			} else {
				tok, line = line, nil
			}
			if bytes.EqualFold(bytes.TrimSpace(tok), strUpgrade) {
				return true
			}
		}
	}
	return false
}

// ambiguousFraming reports a request that the gateway refuses with 400
// although fasthttp parsed it: one with both Transfer-Encoding and
// Content-Length (fasthttp lets chunked win, as RFC 9112 allows, but a
// backend might read it the other way), and one with obsolete line folding
// (fasthttp joins the lines, which can put a space into Host; RFC 9112
// section 5.2 allows refusing). fasthttp itself refuses duplicate or
// malformed Content-Length and unknown or repeated Transfer-Encoding.
func ambiguousFraming(h *fasthttp.RequestHeader) bool {
	raw := h.RawHeaders()
	if bytes.Contains(raw, []byte("\n ")) || bytes.Contains(raw, []byte("\n\t")) {
		return true
	}
	if h.ContentLength() != -1 {
		return false
	}
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(line) > len("content-length") && bytes.EqualFold(line[:len("content-length")], []byte("content-length")) {
			rest := bytes.TrimLeft(line[len("content-length"):], " \t")
			if len(rest) > 0 && rest[0] == ':' {
				return true
			}
		}
	}
	return false
}
