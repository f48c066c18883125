package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// ServerConfig sets the limits of the client-facing server. The zero value
// works; each field documents its default.
type ServerConfig struct {
	// ReadHeaderTimeout bounds reading a request's header block, from its
	// first byte; a client that is slower gets 408 and the connection is
	// closed. Default 10 s.
	ReadHeaderTimeout time.Duration
	// BodyReadTimeout bounds reading a request body once the headers are in
	// (the proxy streams it to the backend meanwhile); a client that is
	// slower gets 408. Default 60 s.
	BodyReadTimeout time.Duration
	// MaxRequestBodyBytes, when set, answers a request whose Content-Length
	// is larger with 413 at once, without waiting for the body (and refuses
	// its Expect: 100-continue). Proxy.Config.MaxRequestBodyBytes still
	// bounds chunked bodies. Default 0: no early check.
	MaxRequestBodyBytes int64
	// IdleTimeout closes a keep-alive client connection that sent no new
	// request for this long. Default 90 s.
	IdleTimeout time.Duration
	// WriteTimeout bounds writing one response to the client. Default: no
	// limit, so that long streams (server-sent events, downloads) work; a
	// client that stops reading holds its backend connection until it goes.
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds a request's header block; a larger one gets
	// 431. It is also the size of each connection's read buffer, held for
	// the connection's life (fasthttp keeps it while request bodies are
	// streamed), so it is what an idle client connection costs. Default
	// 16 KiB (nginx accepts up to 4 × 8 KiB).
	MaxHeaderBytes int
	// MaxConns bounds concurrent client connections. Default 256 Ki.
	MaxConns int
	// Name is sent as the Server header when the backend sends none.
	// Default: no Server header.
	Name string
}

// NewServer returns a fasthttp.Server for h with the client-facing limits of
// cfg: request bodies are streamed to the handler (the Proxy enforces its
// MaxRequestBodyBytes itself), multipart bodies are not parsed, no default
// Content-Type or Server header is invented, and bad requests are answered
// here: 400 for a malformed request or ambiguous framing (Content-Length
// with Transfer-Encoding, duplicate Content-Length), 431 for a header block
// over MaxHeaderBytes, 408 for a client too slow sending its headers. log
// receives the server's own errors at debug level; nil means slog.Default().
//
// The server keeps hijacked connections (fasthttp.Server.KeepHijackedConns):
// a Hijack handler must close its connection itself.
func NewServer(cfg ServerConfig, h fasthttp.RequestHandler, log *slog.Logger) *fasthttp.Server {
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.BodyReadTimeout <= 0 {
		cfg.BodyReadTimeout = 60 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 16 << 10
	}
	if log == nil {
		log = slog.Default()
	}
	bodyTimeout, maxBody := cfg.BodyReadTimeout, cfg.MaxRequestBodyBytes
	tooLarge := func(h *fasthttp.RequestHeader) bool {
		return maxBody > 0 && int64(h.ContentLength()) > maxBody
	}
	// cut marks the headers whose body read was cut short for being too
	// large: fasthttp resets the request on the resulting error, so the
	// error handler cannot read Content-Length again. Headers are pooled
	// with their RequestCtx, so the set stays as small as the pool.
	var cut sync.Map // *fasthttp.RequestHeader → struct{}
	return &fasthttp.Server{
		Handler: h,
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			if _, ok := cut.LoadAndDelete(&ctx.Request.Header); ok {
				ctx.Error("request body too large\n", fasthttp.StatusRequestEntityTooLarge)
				ctx.SetConnectionClose()
				return
			}
			errorHandler(ctx, err)
		},
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			if tooLarge(h) {
				// fasthttp pre-reads some body before the handler runs; cut
				// that short, and the error handler answers 413.
				cut.Store(h, struct{}{})
				return fasthttp.RequestConfig{ReadTimeout: time.Millisecond}
			}
			cut.Delete(h)
			return fasthttp.RequestConfig{ReadTimeout: bodyTimeout}
		},
		ContinueHandler: func(h *fasthttp.RequestHeader) bool { return !tooLarge(h) },
		// Hijack handlers close their own connections, so the server need
		// not keep a goroutine and read buffer per hijacked connection
		// (about 9 KB for each idle WebSocket of the realtime hub).
		KeepHijackedConns:             true,
		Name:                          cfg.Name,
		NoDefaultServerHeader:         cfg.Name == "",
		NoDefaultContentType:          true,
		ReadTimeout:                   cfg.ReadHeaderTimeout,
		IdleTimeout:                   cfg.IdleTimeout,
		WriteTimeout:                  cfg.WriteTimeout,
		ReadBufferSize:                cfg.MaxHeaderBytes,
		MaxConnsPerIP:                 0,
		Concurrency:                   cfg.MaxConns,
		StreamRequestBody:             true,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		SecureErrorLogMessage:         true,
		Logger:                        logger{log},
	}
}

// errorHandler answers requests the server could not read.
func errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var sb *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &sb):
		ctx.Error("request header too large\n", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.As(err, &ne) && ne.Timeout():
		ctx.Error("request timeout\n", fasthttp.StatusRequestTimeout)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error("request body too large\n", fasthttp.StatusRequestEntityTooLarge)
	default:
		ctx.Error("bad request\n", fasthttp.StatusBadRequest)
	}
}

// logger adapts slog to fasthttp.Logger.
type logger struct{ l *slog.Logger }

func (l logger) Printf(format string, args ...any) {
	l.l.Debug("fasthttp: " + fmt.Sprintf(format, args...))
}
