package cdn

import (
	"bytes"
	"io"

	"golang.org/x/net/html"
)

// overflow handles a token longer than MaxTokenSize: the tokenizer gave up
// in its middle. The bytes it read are copied through unchanged, the rest of
// the token is copied through by a small scanner that only looks for where
// the token ends, and a new tokenizer takes over after it, in the same
// raw-text context. It reports whether tokenizing goes on.
func (h *htmlRewriter) overflow() bool {
	partial := h.z.Raw()
	buffered := h.z.Buffered()
	if len(partial) > 0 {
		// A start or end tag: copy it through up to its ">".
		h.emit(h.held)
		h.held = h.held[:0]
		h.emit(partial)
		f := &tagFinisher{}
		name := partial[1:]
		if len(name) > 0 && name[0] == '/' {
			name = name[1:]
		}
		for i, c := range name {
			if isHTMLSpace(c) || c == '/' || c == '>' {
				name = name[:i]
				break
			}
		}
		rawCtx := ""
		if partial[1] != '/' {
			rawCtx = rawTextName(name)
		}
		f.st = tfName
		for _, c := range partial[2:] {
			if f.step(c) {
				// The byte that overran the buffer ended the tag.
				return h.finish(nil, buffered, rawCtx)
			}
		}
		return h.finish(f.step, buffered, rawCtx)
	}
	switch h.last {
	case html.TextToken:
		if h.lastRaw == "plaintext" {
			return h.finish(func(byte) bool { return false }, buffered, "")
		}
		rest := append(bytes.Clone(h.held), buffered...)
		h.held = h.held[:0]
		h.reset(io.MultiReader(bytes.NewReader(rest), h.src), h.lastRaw)
		return true
	case html.CommentToken, html.DoctypeToken:
		if bytes.Equal(h.lastHead, []byte("<!--")) {
			c := &commentFinisher{}
			for _, b := range h.lastTail {
				if c.step(b) {
					return h.finish(nil, buffered, "")
				}
			}
			return h.finish(c.step, buffered, "")
		}
		if bytes.HasSuffix(h.lastTail, []byte(">")) {
			return h.finish(nil, buffered, "")
		}
		return h.finish(func(c byte) bool { return c == '>' }, buffered, "")
	}
	return h.finish(func(byte) bool { return false }, buffered, "")
}

// finish copies bytes through until done reports the end of the token (nil:
// it has ended already), then starts a new tokenizer after it. It reports whether there is more input.
func (h *htmlRewriter) finish(done func(byte) bool, first []byte, rawCtx string) bool {
	scan := func(p []byte) (rest []byte, found bool) {
		if done == nil {
			return p, true
		}
		for i, c := range p {
			if done(c) {
				h.emit(p[:i+1])
				return p[i+1:], true
			}
		}
		h.emit(p)
		return nil, false
	}
	if rest, ok := scan(first); ok {
		h.reset(io.MultiReader(bytes.NewReader(bytes.Clone(rest)), h.src), rawCtx)
		return true
	}
	buf := make([]byte, 32<<10)
	for h.err == nil {
		n, err := h.src.Read(buf)
		if rest, ok := scan(buf[:n]); ok {
			h.reset(io.MultiReader(bytes.NewReader(bytes.Clone(rest)), h.src), rawCtx)
			return true
		}
		if err == io.EOF {
			return false
		}
		if err != nil {
			h.err = err
			return false
		}
	}
	return false
}

// Tag finisher states, after the grammar of the tokenizer's readTag.
const (
	tfName = iota
	tfBeforeAttr
	tfKeyFirst
	tfKey
	tfAfterKey
	tfBeforeVal
	tfQuoted
	tfUnquoted
)

// tagFinisher finds the ">" that ends a tag, byte by byte.
type tagFinisher struct {
	st int
	q  byte
}

// step consumes c and reports whether it ended the tag.
func (f *tagFinisher) step(c byte) bool {
	for {
		switch f.st {
		case tfName:
			if isHTMLSpace(c) {
				f.st = tfBeforeAttr
				return false
			}
			if c == '/' || c == '>' {
				f.st = tfBeforeAttr
				continue
			}
			return false
		case tfBeforeAttr:
			if isHTMLSpace(c) {
				return false
			}
			if c == '>' {
				f.st = tfBeforeAttr
				return true
			}
			f.st = tfKeyFirst
			continue
		case tfKeyFirst, tfKey:
			first := f.st == tfKeyFirst
			f.st = tfKey
			if c == '=' && first {
				return false
			}
			if c == '=' || isHTMLSpace(c) || c == '/' || c == '>' {
				f.st = tfAfterKey
				continue
			}
			return false
		case tfAfterKey:
			switch {
			case isHTMLSpace(c):
				return false
			case c == '/':
				f.st = tfBeforeAttr
				return false
			case c == '=':
				f.st = tfBeforeVal
				return false
			}
			f.st = tfBeforeAttr
			continue
		case tfBeforeVal:
			switch {
			case isHTMLSpace(c):
				return false
			case c == '>':
				f.st = tfBeforeAttr
				continue
			case c == '"' || c == '\'':
				f.st, f.q = tfQuoted, c
				return false
			}
			f.st = tfUnquoted
			return false
		case tfQuoted:
			if c == f.q {
				f.st = tfBeforeAttr
			}
			return false
		case tfUnquoted:
			if isHTMLSpace(c) {
				f.st = tfBeforeAttr
				return false
			}
			if c == '>' {
				f.st = tfBeforeAttr
				continue
			}
			return false
		}
		return false
	}
}

// commentFinisher finds the "-->" or "--!>" that ends a comment.
type commentFinisher struct {
	dashes int
	bang   bool
}

func (f *commentFinisher) step(c byte) bool {
	if f.bang {
		f.bang = false
		switch c {
		case '>':
			return true
		case '-':
			f.dashes = 1
			return false
		}
		f.dashes = 0
		return false
	}
	switch {
	case c == '-':
		f.dashes++
	case c == '>' && f.dashes >= 2:
		return true
	case c == '!' && f.dashes >= 2:
		f.bang = true
	default:
		f.dashes = 0
	}
	return false
}
