package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scaleout/scaleout/balancer"
)

// wsCloseGrace is how long the second direction of a WebSocket relay may
// go on after the first one ended (enough for the closing handshake).
const wsCloseGrace = 5 * time.Second

// maxUpgradeRefusalBody bounds the body of a backend's non-101 answer to a
// WebSocket handshake.
const maxUpgradeRefusalBody = 1 << 20

// wsConn is one relayed WebSocket connection.
type wsConn struct {
	client, backend net.Conn
}

// wsRegistry tracks relayed WebSocket connections so that Close can end them.
type wsRegistry struct {
	mu    sync.Mutex
	conns map[*wsConn]struct{}
}

func (r *wsRegistry) add(c *wsConn) {
	r.mu.Lock()
	r.conns[c] = struct{}{}
	r.mu.Unlock()
}

func (r *wsRegistry) remove(c *wsConn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

func (r *wsRegistry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		_ = c.client.SetDeadline(time.Unix(1, 0))
		_ = c.backend.Close()
	}
}

// WebSockets reports the number of WebSocket connections being relayed.
func (p *Proxy) WebSockets() int {
	p.ws.mu.Lock()
	defer p.ws.mu.Unlock()
	return len(p.ws.conns)
}

// serveWebSocket passes a WebSocket handshake to a backend on a connection
// of its own and, when the backend accepts (101), hijacks the client
// connection and relays bytes both ways until one side closes. The backend
// counts the connection as in flight (Pick … Done) for its whole life, so
// that draining waits for it.
func (p *Proxy) serveWebSocket(ctx *fasthttp.RequestCtx, x *exchange, pool *balancer.Pool) {
	req, resp := &ctx.Request, &ctx.Response
	if cl := req.Header.ContentLength(); cl > 0 || cl == -1 {
		x.up.errors[failClientBody].Inc()
		p.fail(ctx, x, failClientBody, nil)
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
		tryStart := time.Now()
		fail := func(k failKind) failKind {
			pool.Done(b, time.Since(tryStart), k.outcome())
			x.up.errors[k].Inc()
			return k
		}
		last, lastBackend = failNone, b

		conn, err := p.dialBackend(context.Background(), b.URL.Host, b.URL.Scheme == "https", b.URL.Hostname())
		if err != nil {
			last = fail(classifyDial(err))
		} else {
			if p.cfg.RewriteHost {
				req.Header.SetHost(b.URL.Host)
			}
			_ = conn.SetDeadline(tryStart.Add(p.cfg.ResponseHeaderTimeout))
			bw := bufio.NewWriter(conn)
			if err := req.Header.Write(bw); err != nil || bw.Flush() != nil {
				_ = conn.Close()
				last = fail(failSend)
			} else {
				br := bufio.NewReaderSize(conn, p.cfg.MaxResponseHeaderBytes)
				code, err := readResponseHeader(&resp.Header, br)
				switch {
				case err != nil:
					_ = conn.Close()
					resp.Reset()
					last = fail(classifyRead(err))
				case code != fasthttp.StatusSwitchingProtocols:
					// Refused: relay the answer as a plain response.
					err := resp.ReadBody(br, maxUpgradeRefusalBody)
					_ = conn.Close()
					if err != nil {
						resp.Reset()
						last = fail(failRecv)
						break
					}
					x.prepareResponse(&resp.Header)
					outcome := balancer.Success
					if code >= 500 {
						outcome = balancer.ServerError
					}
					pool.Done(b, time.Since(tryStart), outcome)
					p.finish(ctx, x, b, code, int64(len(resp.Body())))
					return
				default:
					p.relayWebSocket(ctx, x, pool, b, conn, br, tryStart)
					return
				}
			}
		}
		if !p.mayRetry(x, last, try) {
			break
		}
		x.up.retries.Inc()
	}
	p.fail(ctx, x, last, lastBackend)
}

// relayWebSocket sends the backend's 101 to the client and relays the two
// connections after the handler returns.
func (p *Proxy) relayWebSocket(ctx *fasthttp.RequestCtx, x *exchange, pool *balancer.Pool, b *balancer.Backend,
	backend net.Conn, br *bufio.Reader, tryStart time.Time) {
	_ = backend.SetDeadline(time.Time{})
	resp := &ctx.Response
	upgrade := append([]byte(nil), resp.Header.Peek(hUpgrade)...)
	x.prepareResponse(&resp.Header)
	resp.Header.SetBytesV(hUpgrade, upgrade)
	resp.Header.SetBytesV(hConnection, strUpgrade)
	head := append([]byte(nil), resp.Header.Header()...)
	var pending []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		pending = append([]byte(nil), b...)
	}
	resp.Reset()
	var rec logRecord
	rec.copyFrom(ctx, x, b)
	up, start := x.up, x.start

	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) {
		wc := &wsConn{client: client, backend: backend}
		p.ws.add(wc)
		var sent int64
		_, err := client.Write(head)
		if err == nil && len(pending) > 0 {
			_, err = client.Write(pending)
		}
		if err == nil {
			sent = relay(client, backend)
		}
		// The server keeps hijacked connections (KeepHijackedConns, see
		// NewServer): closing the client side is ours to do.
		_ = client.Close()
		_ = backend.Close()
		p.ws.remove(wc)
		outcome := balancer.Success
		if err != nil {
			outcome = balancer.Canceled
		}
		pool.Done(b, time.Since(tryStart), outcome)
		took := time.Since(start)
		up.count(fasthttp.StatusSwitchingProtocols)
		up.duration.Observe(took.Seconds())
		if l := p.cfg.AccessLog; l != nil {
			rec.log(l, fasthttp.StatusSwitchingProtocols, took, sent)
		}
	})
}

// relay copies bytes both ways until one side ends, then gives the other
// direction wsCloseGrace to finish. It returns the bytes sent to the client.
func relay(client, backend net.Conn) int64 {
	type result struct {
		n        int64
		toClient bool
	}
	done := make(chan result, 2)
	go func() {
		n, _ := io.Copy(backend, client)
		closeWrite(backend)
		done <- result{n, false}
	}()
	go func() {
		n, _ := io.Copy(client, backend)
		closeWrite(client)
		done <- result{n, true}
	}()
	var toClient int64
	r := <-done
	if r.toClient {
		toClient = r.n
	}
	deadline := time.Now().Add(wsCloseGrace)
	_ = client.SetDeadline(deadline)
	_ = backend.SetDeadline(deadline)
	r = <-done
	if r.toClient {
		toClient = r.n
	}
	return toClient
}

// closeWrite half-closes c if it can, so that its peer sees the end of the
// stream; otherwise it leaves c to be closed.
func closeWrite(c net.Conn) {
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		c = u.UnsafeConn()
	}
	if bc, ok := c.(*backendConn); ok {
		c = bc.Conn
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
