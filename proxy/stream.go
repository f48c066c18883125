package proxy

import (
	"bufio"
	"errors"
	"io"
	"net/http/httputil"
	"time"

	"github.com/scaleout/scaleout/balancer"
)

// bodyStream relays a response body from a backend connection to the
// client as it arrives. fasthttp reads it after the handler returned and
// closes it when the response is written (or could not be); closing returns
// the backend connection to its pool (or closes it), reports the try to the
// balancer, and counts and logs the request.
type bodyStream struct {
	p         *Proxy
	br        *bufio.Reader
	release   func(reuse bool)
	remaining int64     // bytes left of a Content-Length body; -1 chunked; -2 until close
	chunked   io.Reader // decoder of a chunked body
	keep      bool      // the backend allows reusing the connection
	done      bool      // the body ended cleanly
	err       error     // reading from the backend failed
	n         int64
	closed    bool

	pool     *balancer.Pool
	b        *balancer.Backend
	up       *upstream
	start    time.Time
	tryStart time.Time
	code     int
	rec      logRecord
}

var errBodyClosed = errors.New("proxy: response body stream closed")

func (s *bodyStream) initChunked() {
	s.chunked = httputil.NewChunkedReader(s.br)
}

// Read implements io.Reader; it returns whatever the backend has sent so
// far, so that the server flushes it to the client promptly.
func (s *bodyStream) Read(p []byte) (int, error) {
	if s.closed {
		return 0, errBodyClosed
	}
	if s.done {
		return 0, io.EOF
	}
	if s.err != nil {
		return 0, s.err
	}
	var n int
	var err error
	switch {
	case s.chunked != nil:
		n, err = s.chunked.Read(p)
		if err == io.EOF {
			if terr := skipTrailer(s.br); terr != nil {
				s.keep = false
			}
		}
	case s.remaining >= 0:
		if s.remaining == 0 {
			s.done = true
			return 0, io.EOF
		}
		if int64(len(p)) > s.remaining {
			p = p[:s.remaining]
		}
		n, err = s.br.Read(p)
		s.remaining -= int64(n)
		if err == io.EOF && s.remaining > 0 {
			err = io.ErrUnexpectedEOF
		}
		if err == nil && s.remaining == 0 {
			err = io.EOF
		}
	default: // until the backend closes the connection
		n, err = s.br.Read(p)
	}
	s.n += int64(n)
	switch {
	case err == io.EOF:
		s.done = true
	case err != nil:
		s.err = err
	}
	return n, err
}

// skipTrailer reads the trailer section after the last chunk, so that the
// connection can carry the next request. Trailer fields are not relayed.
func skipTrailer(br *bufio.Reader) error {
	for range 64 {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			return nil
		}
	}
	return errors.New("trailer section too long")
}

// Close implements io.Closer.
func (s *bodyStream) Close() error { return s.CloseWithError(nil) }

// CloseWithError is called by fasthttp with the error that stopped writing
// the response to the client, if any.
func (s *bodyStream) CloseWithError(werr error) error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.release(s.keep && s.done && s.err == nil && werr == nil)
	s.release = nil

	outcome := balancer.Success
	switch {
	case s.err != nil:
		outcome = balancer.ConnectFailure
		s.up.errors[failRecv].Inc()
	case werr != nil || !s.done:
		outcome = balancer.Canceled
	case s.code >= 500:
		outcome = balancer.ServerError
	}
	s.pool.Done(s.b, time.Since(s.tryStart), outcome)
	took := time.Since(s.start)
	s.up.count(s.code)
	s.up.duration.Observe(took.Seconds())
	if l := s.p.cfg.AccessLog; l != nil {
		s.rec.log(l, s.code, took, s.n)
	}
	return nil
}
