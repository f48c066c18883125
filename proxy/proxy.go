package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scaleout/scaleout/balancer"
)

// Config configures a Proxy. The zero value works; each field documents its
// default.
type Config struct {
	// DialTimeout bounds connecting to a backend (TCP, and TLS for https
	// backends). Default 2 s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout is how long a backend has to send its response
	// headers once the request is written. Default 30 s. After the headers
	// the body may take as long as it needs (server-sent events never end).
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout closes keep-alive connections to backends that stayed
	// unused this long. Default 90 s.
	IdleConnTimeout time.Duration
	// MaxConnsPerBackend bounds the connections to one backend; a request
	// that finds them all busy waits up to DialTimeout for one. Default 512.
	// WebSocket connections are not counted.
	MaxConnsPerBackend int
	// MaxRequestBodyBytes is the largest request body forwarded; a larger
	// one gets 413. Default 10 MiB. Negative means no limit.
	MaxRequestBodyBytes int64
	// MaxResponseHeaderBytes bounds the header block of a backend's
	// response; a larger one is a backend failure (502). Default 32 KiB.
	MaxResponseHeaderBytes int
	// BufferResponseBytes: responses with a Content-Length up to this size
	// are read whole before they are sent on (cheapest for small bodies);
	// larger and chunked responses are streamed. Default 64 KiB.
	BufferResponseBytes int
	// TrustedProxies are the peers whose X-Forwarded-For, -Proto and -Host
	// are believed and extended; from any other peer they are replaced.
	// By default no peer is trusted.
	TrustedProxies []netip.Prefix
	// RewriteHost sends the backend's host:port as Host instead of the
	// client's Host. By default the client's Host is preserved.
	RewriteHost bool
	// Retries bounds the retrying of failed requests on other backends.
	Retries RetryConfig
	// AccessLog receives one line per request at level Info. Nil means no
	// access log.
	AccessLog *slog.Logger
	// Logger receives errors that are not the client's. Default slog.Default().
	Logger *slog.Logger
	// TLSConfig is used for https backends. Default: a zero tls.Config
	// (system roots, server name from the backend URL).
	TLSConfig *tls.Config
}

// Proxy forwards requests to the backends of balancer pools.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	dialer  net.Dialer

	mu       sync.RWMutex
	clients  map[string]*hostClient // by Backend.ID, http backends
	tclients map[string]*hostClient // by Backend.ID, https backends
	ups      map[string]*upstream

	exchanges sync.Pool // *exchange
	streams   sync.Pool // *bodyStream

	ws wsRegistry
}

// New returns a Proxy configured by cfg, with defaults applied.
func New(cfg Config) *Proxy {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = 30 * time.Second
	}
	if cfg.IdleConnTimeout <= 0 {
		cfg.IdleConnTimeout = 90 * time.Second
	}
	if cfg.MaxConnsPerBackend <= 0 {
		cfg.MaxConnsPerBackend = 512
	}
	if cfg.MaxRequestBodyBytes == 0 {
		cfg.MaxRequestBodyBytes = 10 << 20
	}
	if cfg.MaxResponseHeaderBytes <= 0 {
		cfg.MaxResponseHeaderBytes = 32 << 10
	}
	if cfg.BufferResponseBytes <= 0 {
		cfg.BufferResponseBytes = 64 << 10
	}
	cfg.Retries = cfg.Retries.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Proxy{
		cfg:      cfg,
		log:      cfg.Logger,
		metrics:  newMetrics(),
		dialer:   net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		clients:  make(map[string]*hostClient),
		tclients: make(map[string]*hostClient),
		ups:      make(map[string]*upstream),
	}
	p.ws.conns = make(map[*wsConn]struct{})
	return p
}

// hostClient is the connection pool to one backend.
type hostClient struct {
	hc *fasthttp.HostClient
}

// client returns the connection pool to b, creating it on first use.
func (p *Proxy) client(b *balancer.Backend) *hostClient {
	isTLS := b.URL.Scheme == "https"
	m := p.clients
	if isTLS {
		m = p.tclients
	}
	p.mu.RLock()
	c := m[b.ID]
	p.mu.RUnlock()
	if c != nil {
		return c
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c = m[b.ID]; c != nil {
		return c
	}
	addr := b.URL.Host
	serverName := b.URL.Hostname()
	c = &hostClient{hc: &fasthttp.HostClient{
		Addr: addr,
		Dial: func(addr string) (net.Conn, error) {
			return p.dialBackend(context.Background(), addr, isTLS, serverName)
		},
		MaxConns:            p.cfg.MaxConnsPerBackend,
		MaxIdleConnDuration: p.cfg.IdleConnTimeout,
		MaxConnWaitTimeout:  p.cfg.DialTimeout,
		ReadBufferSize:      p.cfg.MaxResponseHeaderBytes,
		ConnPoolStrategy:    fasthttp.LIFO,
	}}
	m[b.ID] = c
	return c
}

// Forget closes the idle connections to the backend with the given ID and
// drops its connection pool. The gateway calls it when a backend leaves;
// connections still in use are closed soon after their requests end (the
// dropped pool is swept every forgetSweep until it is empty, for at most
// forgetFor).
func (p *Proxy) Forget(id string) {
	p.mu.Lock()
	cs := [2]*hostClient{p.clients[id], p.tclients[id]}
	delete(p.clients, id)
	delete(p.tclients, id)
	p.mu.Unlock()
	for _, c := range cs {
		if c == nil {
			continue
		}
		c.hc.CloseIdleConnections()
		if c.hc.ConnsCount() > 0 {
			go sweep(c.hc)
		}
	}
}

const (
	forgetSweep = 500 * time.Millisecond
	forgetFor   = 10 * time.Minute
)

// sweep closes the connections of a dropped pool as they come back idle.
func sweep(hc *fasthttp.HostClient) {
	t := time.NewTicker(forgetSweep)
	defer t.Stop()
	for end := time.Now().Add(forgetFor); time.Now().Before(end); {
		<-t.C
		hc.CloseIdleConnections()
		if hc.ConnsCount() == 0 {
			return
		}
	}
}

// CloseIdle closes every idle keep-alive connection to every backend.
func (p *Proxy) CloseIdle() {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, c := range p.clients {
		c.hc.CloseIdleConnections()
	}
	for _, c := range p.tclients {
		c.hc.CloseIdleConnections()
	}
}

// Close closes idle backend connections and every WebSocket connection the
// proxy relays (both ends). HTTP requests in flight finish on their own.
func (p *Proxy) Close() {
	p.CloseIdle()
	p.ws.closeAll()
}

// dialBackend connects to a backend, wrapping the connection so that a
// reused keep-alive connection can be checked before a request is written.
func (p *Proxy) dialBackend(ctx context.Context, addr string, isTLS bool, serverName string) (net.Conn, error) {
	c, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	bc := newBackendConn(c)
	if !isTLS {
		return bc, nil
	}
	cfg := p.cfg.TLSConfig
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = serverName
	}
	tc := tls.Client(bc, cfg)
	hctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = c.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	return tc, nil
}

// backendConn is a connection to a backend with a cheap liveness check.
type backendConn struct {
	net.Conn
	raw    syscall.RawConn
	peekFn func(fd uintptr)
	dead   bool
	buf    [1]byte
}

func newBackendConn(c net.Conn) *backendConn {
	bc := &backendConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			bc.raw = raw
			bc.peekFn = bc.peek
		}
	}
	return bc
}

// usable reports whether an idle connection can carry a request: the
// backend has not closed it and sent nothing unasked.
func usable(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	bc, ok := c.(*backendConn)
	if !ok || bc.raw == nil {
		return true
	}
	bc.dead = false
	if err := bc.raw.Control(bc.peekFn); err != nil {
		return false
	}
	return !bc.dead
}

// failKind says why a try failed; it picks the status, the metric label and
// whether the request may go to another backend.
type failKind uint8

const (
	failNone         failKind = iota
	failNoBackend             // no backend may take the request
	failConnect               // connecting failed: nothing was sent
	failConnTimeout           // connecting timed out: nothing was sent
	failPoolFull              // every connection to the backend busy: nothing was sent
	failSend                  // writing the request failed: it may have been received
	failRecv                  // the connection broke before response headers
	failTimeout               // no response headers within ResponseHeaderTimeout
	failBadResponse           // the response could not be parsed
	failStatus                // the backend answered 502, 503 or 504
	failClientBody            // reading the client's body failed
	failBodyTooLarge          // the client's body is over MaxRequestBodyBytes
	failAmbiguous             // the client's request has ambiguous framing
	numFailKinds
)

var failKindNames = [numFailKinds]string{
	failNone:         "none",
	failNoBackend:    "no_backend",
	failConnect:      "connect",
	failConnTimeout:  "connect_timeout",
	failPoolFull:     "pool_full",
	failSend:         "send",
	failRecv:         "receive",
	failTimeout:      "timeout",
	failBadResponse:  "bad_response",
	failStatus:       "status",
	failClientBody:   "client_body",
	failBodyTooLarge: "body_too_large",
	failAmbiguous:    "ambiguous_framing",
}

// notSent reports whether the failed try surely did not reach the backend.
func (k failKind) notSent() bool {
	return k == failConnect || k == failConnTimeout || k == failPoolFull
}

// outcome maps a failure to what the balancer is told.
func (k failKind) outcome() balancer.Outcome {
	switch k {
	case failConnTimeout, failTimeout:
		return balancer.Timeout
	case failConnect, failPoolFull, failSend, failRecv:
		return balancer.ConnectFailure
	case failBadResponse, failStatus:
		return balancer.ServerError
	}
	return balancer.Canceled
}

// status maps a failure to the status the client gets when no try is left.
// This is the one place where failures become HTTP statuses.
func (k failKind) status() int {
	switch k {
	case failNoBackend:
		return fasthttp.StatusServiceUnavailable
	case failConnTimeout, failTimeout:
		return fasthttp.StatusGatewayTimeout
	case failClientBody, failAmbiguous:
		return fasthttp.StatusBadRequest
	case failBodyTooLarge:
		return fasthttp.StatusRequestEntityTooLarge
	}
	return fasthttp.StatusBadGateway
}

func classifyDial(err error) failKind {
	if errors.Is(err, fasthttp.ErrNoFreeConns) {
		return failPoolFull
	}
	if isTimeout(err) {
		return failConnTimeout
	}
	return failConnect
}

func isTimeout(err error) bool {
	if err == fasthttp.ErrTimeout {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
