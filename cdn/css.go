package cdn

import (
	"bufio"
	"bytes"
	"io"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// CSS scanner states.
const (
	cssNormal      = iota
	cssSlash       // after "/": a comment may start
	cssComment     // inside /* */
	cssCommentStar // inside a comment, after "*"
	cssString      // inside a string that is not a URL
	cssURLPre      // after "url(", skipping white space
	cssURLQuoted   // inside url("...") or @import "..."
	cssURLBare     // inside url(...) without quotes
	cssBadURL      // inside a malformed url(...), until ")"
	cssImport      // after "@import", skipping white space
)

// cssScanner rewrites the url() and @import references of a CSS stream. It
// is push-style: Write may split the input anywhere. It buffers at most one
// URL (bounded by maxURL).
type cssScanner struct {
	rs     *resolver
	out    io.Writer
	maxURL int
	err    error
	res    Result

	st        int
	q         byte // quote of the current string
	esc       bool // previous byte was a backslash
	hexN      int  // 1 + hex digits read of an escape in a bare url()
	prevIdent bool // previous byte was part of an identifier
	um        int  // bytes of "url" matched
	im        int  // bytes of "@import" matched
	hold      []byte
	skip      bool // current URL is too long: copied through, not rewritten
	depth     int  // open parentheses
	setDepth  int  // depth inside an image-set(), whose strings are URLs; 0: none
	tail      []byte
}

func (r *Rewriter) newCSSScanner(out io.Writer, rs *resolver) *cssScanner {
	return &cssScanner{rs: rs, out: out, maxURL: r.maxURL}
}

// cssWriter is a cssScanner over a whole text/css body. Its output is
// buffered within one Write call and flushed at its end, so that what came
// in goes out (but for a URL in progress) without many small writes.
type cssWriter struct {
	*cssScanner
	bw *bufio.Writer
}

func (r *Rewriter) newCSSWriter(dst io.Writer, page *url.URL) *cssWriter {
	rs := r.newResolver(page)
	bw := bufio.NewWriterSize(dst, 16<<10)
	return &cssWriter{r.newCSSScanner(bw, rs), bw}
}

// Write scans p and flushes the output.
func (w *cssWriter) Write(p []byte) (int, error) {
	n, err := w.cssScanner.Write(p)
	if err == nil {
		if err = w.bw.Flush(); err != nil {
			w.err = err
			n = 0
		}
	}
	return n, err
}

// Close flushes what the scanner holds.
func (w *cssWriter) Close() error {
	w.finish()
	if err := w.bw.Flush(); w.err == nil {
		w.err = err
	}
	w.res.References = w.rs.n
	return w.err
}

func (s *cssScanner) emit(b []byte) {
	if s.err != nil || len(b) == 0 {
		return
	}
	_, s.err = s.out.Write(b)
}

// cssSpecial marks the bytes that may change the scanner's state outside
// strings and comments.
var cssSpecial = [256]bool{'u': true, 'U': true, '@': true, '/': true, '"': true, '\'': true, '\\': true, '(': true, ')': true}

func isIdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= 0x80
}

func isCSSSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

const importWord = "@import"

// Write scans p. It returns len(p) unless writing to the output failed.
func (s *cssScanner) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	start := 0 // p[start:i] is scanned and not yet emitted
	for i := 0; i < len(p); i++ {
		// Skip quickly over runs that cannot start anything of interest.
		switch s.st {
		case cssNormal:
			if !s.esc && s.um == 0 && s.im == 0 && !cssSpecial[p[i]] {
				j := i + 1
				for j < len(p) && !cssSpecial[p[j]] {
					j++
				}
				s.prevIdent = isIdentByte(p[j-1])
				i = j - 1
				continue
			}
		case cssComment:
			j := bytes.IndexByte(p[i:], '*')
			if j < 0 {
				i = len(p) - 1
				continue
			}
			i += j
		}
		c := p[i]
	again:
		switch s.st {
		case cssNormal:
			if s.esc {
				s.esc = false
				s.prevIdent = true
				s.um, s.im = 0, 0
				continue
			}
			if s.im > 0 {
				if s.im < len(importWord) {
					if c|0x20 == importWord[s.im] {
						s.im++
						continue
					}
					s.im = 0
				} else {
					s.im = 0
					if isCSSSpace(c) {
						s.st = cssImport
						continue
					}
					if c == '"' || c == '\'' {
						s.emit(p[start : i+1])
						start = i + 1
						s.beginURL(c)
						continue
					}
				}
			}
			if s.um > 0 {
				switch {
				case s.um == 1 && c|0x20 == 'r', s.um == 2 && c|0x20 == 'l':
					s.um++
					continue
				case s.um == 3 && c == '(':
					s.um = 0
					s.prevIdent = false
					s.st = cssURLPre
					s.depth++
					continue
				}
				s.um = 0
			}
			switch c {
			case 'u', 'U':
				if !s.prevIdent {
					s.um = 1
				}
				s.prevIdent = true
			case '@':
				s.im = 1
				s.prevIdent = false
			case '/':
				s.st = cssSlash
				s.prevIdent = false
			case '"', '\'':
				s.prevIdent = false
				if s.setDepth > 0 && s.depth == s.setDepth {
					// A URL string of image-set().
					s.emit(p[start : i+1])
					start = i + 1
					s.beginURL(c)
					continue
				}
				s.st, s.q = cssString, c
			case '(':
				s.depth++
				if s.setDepth == 0 && s.endsWithImageSet(p, i) {
					s.setDepth = s.depth
				}
				s.prevIdent = false
			case ')':
				s.closeParen()
				s.prevIdent = false
			case '\\':
				s.esc = true
			default:
				s.prevIdent = isIdentByte(c)
			}
		case cssSlash:
			if c == '*' {
				s.st = cssComment
				continue
			}
			s.st = cssNormal
			goto again
		case cssComment:
			if c == '*' {
				s.st = cssCommentStar
			}
		case cssCommentStar:
			switch c {
			case '/':
				s.st = cssNormal
			case '*':
			default:
				s.st = cssComment
			}
		case cssString:
			switch {
			case s.esc:
				s.esc = false
			case c == '\\':
				s.esc = true
			case c == s.q || c == '\n':
				s.st = cssNormal
			}
		case cssImport:
			if isCSSSpace(c) {
				continue
			}
			if c == '"' || c == '\'' {
				s.emit(p[start : i+1])
				start = i + 1
				s.beginURL(c)
				continue
			}
			s.st = cssNormal
			goto again
		case cssURLPre:
			if isCSSSpace(c) {
				continue
			}
			s.emit(p[start:i])
			start = i
			if c == '"' || c == '\'' {
				s.emit(p[i : i+1])
				start = i + 1
				s.beginURL(c)
				continue
			}
			if c == ')' {
				s.st = cssNormal
				goto again
			}
			s.beginURL(0)
			s.st = cssURLBare
			goto again
		case cssURLQuoted:
			end := false
			switch {
			case s.esc:
				s.esc = false
			case c == '\\':
				s.esc = true
			case c == s.q:
				end = true
			case c == '\n':
				// A bad string: copy it through.
				s.abandonURL(p[start:i])
				start = i
				s.st = cssNormal
				goto again
			}
			if end {
				s.endURL(p[start:i])
				start = i
				s.st = cssNormal
				s.prevIdent = false
				continue
			}
			if !s.skip && len(s.hold)+(i-start) > s.maxURL {
				s.abandonURL(p[start : i+1])
				start = i + 1
				s.skip = true
				s.res.Oversized++
			}
		case cssURLBare:
			if s.hexN > 0 {
				// Inside a hex escape: up to 6 hex digits and one white space.
				if isHex(c) && s.hexN < 7 {
					s.hexN++
					continue
				}
				s.hexN = 0
				if isCSSSpace(c) {
					continue
				}
			}
			switch {
			case s.esc:
				s.esc = false
				if isHex(c) {
					s.hexN = 2
				}
			case c == '\\':
				s.esc = true
			case c == ')' || isCSSSpace(c):
				s.endURL(p[start:i])
				start = i
				s.st = cssNormal
				s.prevIdent = false
				goto again
			case c == '"' || c == '\'' || c == '(' || c < 0x20 || c == 0x7f:
				s.abandonURL(p[start:i])
				start = i
				s.st = cssBadURL
				goto again
			}
			if !s.skip && len(s.hold)+(i-start) > s.maxURL {
				s.abandonURL(p[start : i+1])
				start = i + 1
				s.skip = true
				s.res.Oversized++
			}
		case cssBadURL:
			switch {
			case s.esc:
				s.esc = false
			case c == '\\':
				s.esc = true
			case c == ')':
				s.st = cssNormal
				s.prevIdent = false
				s.closeParen()
			}
		}
	}
	// Keep the last bytes for endsWithImageSet in the next Write.
	if len(p) >= len(imageSet)+1 {
		s.tail = append(s.tail[:0], p[len(p)-len(imageSet)-1:]...)
	} else {
		s.tail = append(s.tail, p...)
		if n := len(s.tail) - len(imageSet) - 1; n > 0 {
			s.tail = append(s.tail[:0], s.tail[n:]...)
		}
	}
	if s.st == cssURLQuoted || s.st == cssURLBare {
		if !s.skip {
			s.hold = append(s.hold, p[start:]...)
		} else {
			s.emit(p[start:])
		}
	} else {
		s.emit(p[start:])
	}
	if s.err != nil {
		return 0, s.err
	}
	return len(p), nil
}

const imageSet = "image-set"

// endsWithImageSet reports whether the "(" at p[i] opens image-set() or
// -webkit-image-set(), looking back into earlier writes if needed.
func (s *cssScanner) endsWithImageSet(p []byte, i int) bool {
	var b [len(imageSet) + 1]byte
	n := 0 // bytes of b filled, from the end
	for j := i - 1; j >= 0 && n < len(b); j-- {
		n++
		b[len(b)-n] = p[j]
	}
	for j := len(s.tail) - 1; j >= 0 && n < len(b) && i < len(b); j-- {
		n++
		b[len(b)-n] = s.tail[j]
	}
	if n < len(imageSet) {
		return false
	}
	for k := 0; k < len(imageSet); k++ {
		if lowerByte(b[len(b)-len(imageSet)+k]) != imageSet[k] {
			return false
		}
	}
	return n == len(imageSet) || b[0] == '-' || !isIdentByte(b[0])
}

// closeParen leaves a parenthesis, and image-set() with it.
func (s *cssScanner) closeParen() {
	if s.depth > 0 {
		s.depth--
	}
	if s.setDepth > s.depth {
		s.setDepth = 0
	}
}

func (s *cssScanner) beginURL(q byte) {
	s.st, s.q, s.esc, s.skip, s.hexN = cssURLQuoted, q, false, false, 0
	s.hold = s.hold[:0]
}

// abandonURL copies the held URL and tail through unchanged.
func (s *cssScanner) abandonURL(tail []byte) {
	if !s.skip {
		s.emit(s.hold)
	}
	s.emit(tail)
	s.hold = s.hold[:0]
	s.esc = false
}

// endURL rewrites the held URL plus tail and emits it.
func (s *cssScanner) endURL(tail []byte) {
	if s.skip {
		s.emit(tail)
		s.skip = false
		s.esc = false
		return
	}
	raw := append(s.hold, tail...)
	s.hold = raw[:0]
	s.esc = false
	s.emit(s.rewriteRaw(raw, s.q, s.st == cssURLBare))
}

// finish is called at the end of input: CSS closes open URLs at EOF.
func (s *cssScanner) finish() {
	switch s.st {
	case cssURLQuoted, cssURLBare:
		if s.skip {
			s.skip = false
		} else {
			raw := s.hold
			s.hold = s.hold[:0]
			s.emit(s.rewriteRaw(raw, s.q, s.st == cssURLBare))
		}
	}
	s.st = cssNormal
}

// rewriteRaw returns the replacement of a raw CSS URL (the text between the
// quotes or parentheses), keeping surrounding white space.
func (s *cssScanner) rewriteRaw(raw []byte, q byte, bare bool) []byte {
	lo, hi := 0, len(raw)
	for lo < hi && isCSSSpace(raw[lo]) {
		lo++
	}
	for hi > lo && isCSSSpace(raw[hi-1]) && (hi < 2 || raw[hi-2] != '\\') {
		hi--
	}
	core := raw[lo:hi]
	if len(core) == 0 {
		return raw
	}
	var v string
	if bytes.IndexByte(core, '\\') >= 0 {
		v = cssUnescape(string(core))
	} else {
		v = string(core)
	}
	nu, ok := s.rs.rewrite(v)
	if !ok {
		return raw
	}
	out := make([]byte, 0, len(raw)+len(nu))
	out = append(out, raw[:lo]...)
	out = appendCSSURL(out, nu, q, bare)
	return append(out, raw[hi:]...)
}

// appendCSSURL escapes u for a CSS string quoted with q, or for a bare url().
func appendCSSURL(b []byte, u string, q byte, bare bool) []byte {
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c == '\\', !bare && c == q, bare && (c == '"' || c == '\'' || c == '(' || c == ')'):
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f || bare && c == ' ':
			b = append(b, '\\')
			b = strconv.AppendInt(b, int64(c), 16)
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return b
}

// cssUnescape decodes CSS escapes: "\" + up to 6 hex digits (+ one white
// space), "\" + newline (a line continuation, dropped), "\" + any other byte.
func cssUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(s) {
			break
		}
		if c = s[i]; c == '\n' {
			continue
		}
		j := i
		for j < len(s) && j-i < 6 && isHex(s[j]) {
			j++
		}
		if j == i {
			b.WriteByte(c)
			continue
		}
		n, _ := strconv.ParseUint(s[i:j], 16, 32)
		if n == 0 || n > utf8.MaxRune || n >= 0xd800 && n <= 0xdfff {
			n = utf8.RuneError
		}
		b.WriteRune(rune(n))
		if j < len(s) && isCSSSpace(s[j]) {
			j++
		}
		i = j - 1
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// rewriteCSSString rewrites a CSS fragment held in memory, such as a style
// attribute's value or a <style> block.
func rewriteCSSString(rs *resolver, css []byte, maxURL int) ([]byte, int) {
	var b byteSink
	b.buf = make([]byte, 0, len(css)+64)
	s := &cssScanner{rs: rs, out: &b, maxURL: maxURL}
	_, _ = s.Write(css)
	s.finish()
	return b.buf, s.res.Oversized
}

type byteSink struct{ buf []byte }

func (b *byteSink) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	return len(p), nil
}
