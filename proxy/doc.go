// Package proxy is the HTTP and WebSocket reverse proxy of the gateway: it
// forwards one client request to a backend that a balancer.Pool picks, over
// a bounded keep-alive connection pool per backend, on valyala/fasthttp.
//
// A Proxy removes hop-by-hop headers both ways, sets X-Forwarded-For,
// X-Forwarded-Proto and X-Forwarded-Host (replacing what an untrusted client
// sent), keeps or creates X-Request-ID, streams request and response bodies
// (server-sent events reach the client event by event), passes WebSocket
// upgrades through, applies dial, response-header and idle timeouts and a
// request body limit, retries failed requests on other backends where that is
// safe, and writes one access log line per request. NewServer builds the
// client-facing fasthttp.Server with the limits that go with it: header size
// (431), header read timeout (408), malformed or ambiguously framed requests
// (400).
//
// Retries follow one rule: a request is sent to a second backend only when
// the first surely did not receive it (the connection could not be made), or
// when the method is idempotent (RFC 9110: GET, HEAD, OPTIONS, TRACE, PUT,
// DELETE) and its body is held in memory so that it can be sent again. A
// POST that reached a backend is never sent twice, not even when a reused
// keep-alive connection turns out to be dead after the request was written.
//
// fasthttp reuses its RequestCtx, Request and Response objects: nothing in
// this package keeps a reference to them after the handler returns; what a
// streamed response needs later (method, path, request ID for the access log)
// is copied.
//
// Every method of Proxy is safe to call from many goroutines at once.
package proxy
