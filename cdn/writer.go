package cdn

import (
	"errors"
	"io"
	"net/url"
)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("cdn: write to closed rewriter")

// Writer is a push-style rewriter of one response body: a proxy writes the
// upstream body to it in chunks of any size and closes it at the end; the
// rewritten body goes to the destination writer. A Writer is for one
// goroutine at a time, and the destination must not be used by anyone else
// until Close returns. Close must be called, also on error paths, to
// release the Writer's resources.
type Writer struct {
	r      *Rewriter
	write  func([]byte) (int, error)
	close  func() error
	res    Result
	closed bool
	err    error
}

var _ io.WriteCloser = (*Writer)(nil)

// NewWriter returns a Writer that rewrites a body of contentType served at
// page into dst. Bodies that are not rewritable are copied unchanged.
func (r *Rewriter) NewWriter(dst io.Writer, page *url.URL, contentType string) *Writer {
	w := &Writer{r: r}
	switch KindOf(contentType) {
	case KindCSS:
		cw := &countWriter{w: dst}
		c := r.newCSSWriter(cw, page)
		var in int64
		w.write = func(p []byte) (int, error) {
			in += int64(len(p))
			return c.Write(p)
		}
		w.close = func() error {
			err := c.Close()
			w.res = c.res
			w.res.BytesIn, w.res.BytesOut = in, cw.n
			r.stats.cssPages.Add(1)
			r.stats.references.Add(int64(w.res.References))
			r.stats.oversized.Add(int64(w.res.Oversized))
			return err
		}
	case KindHTML:
		// The tokenizer pulls its input, so it runs on its own goroutine
		// that reads what Write pushes into a pipe.
		pr, pw := io.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, err := r.Rewrite(dst, pr, page, contentType)
			w.res = res
			// Unblock writers if rewriting stopped early (a write error).
			if err == nil {
				err = io.ErrClosedPipe
			}
			pr.CloseWithError(err)
			if !errors.Is(err, io.ErrClosedPipe) {
				w.err = err
			}
		}()
		w.write = pw.Write
		w.close = func() error {
			pw.Close()
			<-done
			return w.err
		}
	default:
		cw := &countWriter{w: dst}
		w.write = func(p []byte) (int, error) {
			n, err := cw.Write(p)
			w.res.BytesIn += int64(n)
			w.res.BytesOut = cw.n
			return n, err
		}
		w.close = func() error { return nil }
	}
	return w
}

// Write rewrites p.
func (w *Writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	return w.write(p)
}

// Close flushes the rest of the body and returns the first error of the
// rewrite.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	return w.close()
}

// Result returns what the rewrite did; it is complete after Close.
func (w *Writer) Result() Result { return w.res }
