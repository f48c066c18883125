package cdn

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/url"
	"strings"

	"golang.org/x/net/html"
)

// htmlRewriter is the state of one HTML stream.
type htmlRewriter struct {
	r   *Rewriter
	rs  *resolver
	out *bufio.Writer
	err error // first write error
	res Result

	z          *html.Tokenizer
	src        io.Reader
	pendingRaw string // raw-text element whose text comes next
	preDepth   int
	held       []byte // tail of the last text token, see holdTail
	last       html.TokenType
	lastRaw    string // raw-text element of the last text token
	lastHead   []byte // first bytes of the last comment or doctype token
	lastTail   []byte // last bytes of the last comment or doctype token

	attrs   []attrSpan
	spans   [][2]int
	patches []patch
	pbuf    []byte // replacement bytes of the patches of one tag
	buf     []byte
}

// patch replaces raw[v0:v1] of a tag with pbuf[r0:r1].
type patch struct {
	v0, v1 int
	r0, r1 int
}

// rawTextElements are the elements whose content the tokenizer reads as raw
// text (or RCDATA) up to their end tag.
var rawTextElements = [...]string{"iframe", "noembed", "noframes", "noscript", "plaintext", "script", "style", "textarea", "title", "xmp"}

func rawTextName(name []byte) string {
	for _, s := range rawTextElements {
		if eqFold(name, s) {
			return s
		}
	}
	return ""
}

func (r *Rewriter) rewriteHTML(dst io.Writer, src io.Reader, page *url.URL) (Result, error) {
	h := &htmlRewriter{r: r, rs: r.newResolver(page), out: bufio.NewWriterSize(dst, 32<<10)}
	// Flush what is rewritten whenever the tokenizer needs more input, so
	// that a page streams through (the browser sees the <head> early)
	// instead of waiting for 32 KiB or the end.
	src = &flushingReader{r: src, w: h.out}
	h.reset(src, "")
	err := h.run()
	if ferr := h.out.Flush(); h.err == nil {
		h.err = ferr
	}
	if err == nil {
		err = h.err
	}
	h.res.References = h.rs.n
	return h.res, err
}

// reset starts a new tokenizer on src. If rawCtx is set, the tokenizer starts
// inside that raw-text element.
func (h *htmlRewriter) reset(src io.Reader, rawCtx string) {
	h.src = src
	if rawCtx != "" {
		src = io.MultiReader(strings.NewReader("<"+rawCtx+">"), src)
	}
	h.z = html.NewTokenizer(src)
	h.z.SetMaxBuf(h.r.maxToken)
	if rawCtx != "" {
		h.z.Next() // the synthetic start tag, not emitted
		h.pendingRaw = rawCtx
	}
	h.last = html.ErrorToken
}

func (h *htmlRewriter) emit(b []byte) {
	if h.err == nil && len(b) > 0 {
		_, h.err = h.out.Write(b)
	}
}

func (h *htmlRewriter) run() error {
	for h.err == nil {
		tt := h.z.Next()
		if tt == html.ErrorToken {
			err := h.z.Err()
			if errors.Is(err, html.ErrBufferExceeded) {
				h.res.Oversized++
				if h.overflow() {
					continue
				}
				return h.err
			}
			h.emit(h.held)
			h.emit(h.z.Raw())
			if err == io.EOF {
				return nil
			}
			return err
		}
		h.emit(h.held)
		h.held = h.held[:0]
		raw := h.z.Raw()
		rawCtx := h.pendingRaw
		h.pendingRaw = ""
		switch tt {
		case html.TextToken:
			h.lastRaw = rawCtx
			if rawCtx == "style" && h.preDepth == 0 {
				out, over := rewriteCSSString(h.rs, h.holdTail(raw), h.r.maxURL)
				h.res.Oversized += over
				h.emit(out)
			} else if rawCtx == "noscript" && h.preDepth == 0 {
				// Browsers without scripts render <noscript> content as
				// markup (lazy-loading fallbacks are images there).
				h.emit(h.rewriteFragment(h.holdTail(raw)))
			} else {
				h.emit(h.holdTail(raw))
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			h.startTag(raw)
		case html.EndTagToken:
			if h.preDepth > 0 {
				name := raw[2:]
				for i, c := range name {
					if isHTMLSpace(c) || c == '/' || c == '>' {
						name = name[:i]
						break
					}
				}
				if eqFold(name, "pre") || eqFold(name, "listing") {
					h.preDepth--
				}
			}
			h.emit(raw)
		case html.CommentToken, html.DoctypeToken:
			h.lastHead = append(h.lastHead[:0], raw[:min(len(raw), 4)]...)
			h.lastTail = append(h.lastTail[:0], raw[max(0, len(raw)-4):]...)
			h.emit(raw)
		default:
			h.emit(raw)
		}
		h.last = tt
	}
	return h.err
}

// holdTail returns raw without a trailing "<..." of up to 12 bytes, which it
// keeps in h.held: if the tokenizer stopped in the middle of a long text for
// exceeding its buffer, those bytes may start a tag and must be tokenized
// again.
func (h *htmlRewriter) holdTail(raw []byte) []byte {
	from := max(0, len(raw)-12)
	if i := bytes.LastIndexByte(raw[from:], '<'); i >= 0 {
		h.held = append(h.held[:0], raw[from+i:]...)
		return raw[:from+i]
	}
	return raw
}

// startTag emits a start tag, rewriting its URL attributes.
func (h *htmlRewriter) startTag(raw []byte) {
	name, attrs, ok := scanTag(raw, h.attrs)
	h.attrs = attrs
	if rt := rawTextName(name); rt != "" {
		h.pendingRaw = rt
	}
	if eqFold(name, "pre") || eqFold(name, "listing") {
		h.preDepth++
		h.emit(raw)
		return
	}
	if !ok || h.preDepth > 0 || len(attrs) == 0 {
		h.emit(raw)
		return
	}
	h.patches, h.pbuf = h.patches[:0], h.pbuf[:0]
	h.tagPatches(name, raw, attrs)
	if len(h.patches) == 0 {
		h.emit(raw)
		return
	}
	prev := 0
	for _, p := range h.patches {
		h.emit(raw[prev:p.v0])
		h.emit(h.pbuf[p.r0:p.r1])
		prev = p.v1
	}
	h.emit(raw[prev:])
}

// Attribute kinds.
const (
	attrNone = iota
	attrURL
	attrSrcset
	attrStyle
)

// linkRels are the <link rel> values whose href is an offloadable asset.
var linkRels = [...]string{"stylesheet", "preload", "modulepreload", "prefetch", "icon", "apple-touch-icon", "apple-touch-icon-precomposed", "apple-touch-startup-image", "mask-icon"}

// metaImages are the <meta property|name> values whose content is an image.
var metaImages = [...]string{"og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src"}

func (h *htmlRewriter) tagPatches(name, raw []byte, attrs []attrSpan) {
	isLink := eqFold(name, "link")
	isMeta := eqFold(name, "meta")
	isBase := eqFold(name, "base")
	svgRef := eqFold(name, "image") || eqFold(name, "use")
	noSrc := eqFold(name, "iframe") || eqFold(name, "frame")
	linkAsset, metaImage := false, false
	// Subresource integrity on a cross-origin fetch needs CORS: a tag with
	// integrity but no crossorigin attribute would break on the CDN.
	integrity, crossorigin := false, false
	for _, a := range attrs {
		k := raw[a.k0:a.k1]
		integrity = integrity || eqFold(k, "integrity")
		crossorigin = crossorigin || eqFold(k, "crossorigin")
	}
	if integrity && !crossorigin {
		return
	}
	if isLink || isMeta {
		for _, a := range attrs {
			k := raw[a.k0:a.k1]
			switch {
			case isLink && eqFold(k, "rel"):
				v := raw[a.v0:a.v1]
				if bytes.IndexByte(v, '&') >= 0 {
					v = []byte(h.attrValue(raw, a))
				}
				for len(v) > 0 && !linkAsset {
					i := 0
					for i < len(v) && isHTMLSpace(v[i]) {
						i++
					}
					j := i
					for j < len(v) && !isHTMLSpace(v[j]) {
						j++
					}
					for _, s := range linkRels {
						if eqFold(v[i:j], s) {
							linkAsset = true
						}
					}
					v = v[j:]
				}
			case isMeta && (eqFold(k, "property") || eqFold(k, "name")):
				v := bytes.TrimSpace([]byte(h.attrValue(raw, a)))
				for _, s := range metaImages {
					if eqFold(v, s) {
						metaImage = true
					}
				}
			}
		}
	}
	for _, a := range attrs {
		k := raw[a.k0:a.k1]
		kind := attrNone
		switch {
		case eqFold(k, "style"):
			kind = attrStyle
		case eqFold(k, "src") || eqFold(k, "data-src"):
			if !noSrc {
				kind = attrURL
			}
		case eqFold(k, "srcset") || eqFold(k, "data-srcset"):
			kind = attrSrcset
		case eqFold(k, "imagesrcset"):
			if linkAsset {
				kind = attrSrcset
			}
		case eqFold(k, "poster"):
			kind = attrURL
		case eqFold(k, "background"):
			// The legacy background image of <body>, <table>, <td>, <th>.
			kind = attrURL
		case eqFold(k, "href"):
			if isBase {
				h.rs.setBase(h.attrValue(raw, a))
			} else if linkAsset || svgRef {
				kind = attrURL
			}
		case eqFold(k, "xlink:href"):
			if svgRef {
				kind = attrURL
			}
		case eqFold(k, "content"):
			if metaImage {
				kind = attrURL
			}
		}
		if kind != attrNone {
			h.rewriteAttr(raw, a, kind)
		}
	}
}

// attrValue returns the decoded value of attribute a.
func (h *htmlRewriter) attrValue(raw []byte, a attrSpan) string {
	v := raw[a.v0:a.v1]
	if bytes.IndexByte(v, '&') < 0 && bytes.IndexByte(v, '\r') < 0 && bytes.IndexByte(v, 0) < 0 {
		return string(v)
	}
	return decodeAttr(raw[a.k0:a.k1], v)
}

// decodeAttr decodes an attribute value exactly as the HTML tokenizer does
// (attribute-mode character references, newline normalisation), by
// tokenizing a one-attribute tag.
func decodeAttr(key, val []byte) string {
	var b bytes.Buffer
	b.Grow(len(val) + 16)
	b.WriteString("<a ")
	b.Write(key)
	b.WriteString(`="`)
	b.Write(bytes.ReplaceAll(val, []byte(`"`), []byte("&quot;")))
	b.WriteString(`">`)
	z := html.NewTokenizer(&b)
	z.Next()
	_, v, _ := z.TagAttr()
	return string(v)
}

// rewriteAttr records the patch that rewrites attribute a, if any.
func (h *htmlRewriter) rewriteAttr(raw []byte, a attrSpan, kind int) {
	rv := raw[a.v0:a.v1]
	lo, hi := 0, len(rv)
	for lo < hi && isHTMLSpace(rv[lo]) {
		lo++
	}
	for hi > lo && isHTMLSpace(rv[hi-1]) {
		hi--
	}
	if lo == hi {
		return
	}
	core := rv[lo:hi]
	encoded := bytes.IndexByte(core, '&') >= 0 || bytes.IndexByte(core, '\r') >= 0 || bytes.IndexByte(core, 0) >= 0
	var v string
	if encoded {
		v = decodeAttr(raw[a.k0:a.k1], core)
	} else {
		v = string(core)
	}
	var nv string
	switch kind {
	case attrURL:
		u, ok := h.rs.rewrite(trimURLSpace(v))
		if !ok {
			return
		}
		nv = u
	case attrSrcset:
		h.spans = srcsetURLs(v, h.spans[:0])
		var b strings.Builder
		prev, changed := 0, false
		for _, sp := range h.spans {
			u, ok := h.rs.rewrite(v[sp[0]:sp[1]])
			if !ok {
				continue
			}
			b.WriteString(v[prev:sp[0]])
			b.WriteString(u)
			prev, changed = sp[1], true
		}
		if !changed {
			return
		}
		b.WriteString(v[prev:])
		nv = b.String()
	case attrStyle:
		before := h.rs.n
		out, over := rewriteCSSString(h.rs, []byte(v), h.r.maxURL)
		h.res.Oversized += over
		if h.rs.n == before {
			return
		}
		nv = string(out)
	}
	amp := encoded && bytes.Contains(core, []byte("&amp;"))
	q := a.q
	repl := h.buf[:0]
	if q == 0 && needsQuotes(nv) {
		q = '"'
		repl = append(repl, '"')
		repl = appendAttrValue(repl, nv, q, amp)
		repl = append(repl, '"')
	} else {
		repl = appendAttrValue(repl, nv, q, amp)
	}
	// The patch keeps the white space around the value.
	r0 := len(h.pbuf)
	h.pbuf = append(h.pbuf, rv[:lo]...)
	h.pbuf = append(h.pbuf, repl...)
	h.pbuf = append(h.pbuf, rv[hi:]...)
	h.buf = repl
	h.patches = append(h.patches, patch{v0: a.v0, v1: a.v1, r0: r0, r1: len(h.pbuf)})
}

// rewriteFragment rewrites markup held in memory (at most MaxTokenSize
// bytes), such as the content of <noscript>, with the page's resolver.
func (h *htmlRewriter) rewriteFragment(b []byte) []byte {
	var sink byteSink
	sink.buf = make([]byte, 0, len(b)+64)
	in := &htmlRewriter{r: h.r, rs: h.rs, out: bufio.NewWriterSize(&sink, 4<<10)}
	in.reset(bytes.NewReader(b), "")
	_ = in.run() // reads from memory: no read error
	_ = in.out.Flush()
	h.res.Oversized += in.res.Oversized
	return sink.buf
}

// trimURLSpace strips what the URL parser strips around a URL: C0 controls
// and spaces (not other Unicode white space).
func trimURLSpace(s string) string {
	for len(s) > 0 && s[0] <= ' ' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] <= ' ' {
		s = s[:len(s)-1]
	}
	return s
}

// flushingReader flushes w before each read from r.
type flushingReader struct {
	r io.Reader
	w *bufio.Writer
}

func (f *flushingReader) Read(p []byte) (int, error) {
	if f.w.Buffered() > 0 {
		if err := f.w.Flush(); err != nil {
			return 0, err
		}
	}
	return f.r.Read(p)
}
