package cdn

import (
	"strings"
)

// attrSpan locates one attribute inside the raw bytes of a start tag.
type attrSpan struct {
	k0, k1 int  // key
	v0, v1 int  // value, without quotes
	q      byte // '"', '\'' or 0 for an unquoted (or missing) value
}

func isHTMLSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f'
}

// scanTag finds the tag name and the attributes of a complete start tag,
// following exactly the grammar of golang.org/x/net/html's Tokenizer
// (readTag), including its rule that only the first of several attributes
// with the same name counts. ok is false if raw is not a complete tag.
func scanTag(raw []byte, attrs []attrSpan) (name []byte, _ []attrSpan, ok bool) {
	attrs = attrs[:0]
	n := len(raw)
	if n < 3 || raw[0] != '<' {
		return nil, attrs, false
	}
	i := 2
	for ; i < n; i++ {
		c := raw[i]
		if isHTMLSpace(c) || c == '/' || c == '>' {
			break
		}
	}
	name = raw[1:i]
	if i < n && isHTMLSpace(raw[i]) {
		i++
	}
	skip := func() {
		for i < n && isHTMLSpace(raw[i]) {
			i++
		}
	}
	skip()
	for {
		if i >= n {
			return name, attrs, false
		}
		if raw[i] == '>' {
			return name, attrs, i == n-1
		}
		// Attribute key.
		a := attrSpan{k0: i}
		for i < n {
			c := raw[i]
			i++
			if c == '=' && a.k0+1 == i {
				continue
			}
			if c == '=' || isHTMLSpace(c) || c == '/' || c == '>' {
				i--
				break
			}
		}
		a.k1 = i
		// Attribute value.
		a.v0, a.v1 = i, i
		skip()
		if i >= n {
			return name, attrs, false
		}
		c := raw[i]
		i++
		switch {
		case c == '/':
		case c != '=':
			i--
		default:
			skip()
			if i >= n {
				return name, attrs, false
			}
			q := raw[i]
			i++
			switch q {
			case '>':
				i--
			case '\'', '"':
				a.q = q
				a.v0 = i
				for i < n && raw[i] != q {
					i++
				}
				if i >= n {
					return name, attrs, false
				}
				a.v1 = i
				i++
			default:
				a.v0 = i - 1
				for i < n {
					c := raw[i]
					i++
					if isHTMLSpace(c) {
						a.v1 = i - 1
						break
					}
					if c == '>' {
						i--
						a.v1 = i
						break
					}
				}
				if i >= n {
					return name, attrs, false
				}
			}
		}
		if a.k1 > a.k0 && !hasKey(raw, attrs, raw[a.k0:a.k1]) {
			attrs = append(attrs, a)
		}
		skip()
	}
}

func hasKey(raw []byte, attrs []attrSpan, k []byte) bool {
	for _, a := range attrs {
		if eqFoldBytes(raw[a.k0:a.k1], k) {
			return true
		}
	}
	return false
}

func eqFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lowerByte(a[i]) != lowerByte(b[i]) {
			return false
		}
	}
	return true
}

// eqFold reports whether a equals the lower-case ASCII string s, ignoring
// the case of a.
func eqFold(a []byte, s string) bool {
	if len(a) != len(s) {
		return false
	}
	for i := range a {
		if lowerByte(a[i]) != s[i] {
			return false
		}
	}
	return true
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// appendAttrValue appends s encoded for an attribute value quoted with q
// (0: unquoted; the caller adds quotes when needsQuotes). amp tells whether
// '&' is written as "&amp;", as the original value did.
func appendAttrValue(b []byte, s string, q byte, amp bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '&' && amp:
			b = append(b, "&amp;"...)
		case c == '"' && q == '"':
			b = append(b, "&quot;"...)
		case c == '\'' && q == '\'':
			b = append(b, "&#39;"...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// needsQuotes reports whether s cannot be an unquoted attribute value:
// the tokenizer would end it early or read it as quoted. (Characters that
// are only parse errors, such as "=", are left as the page had them.)
func needsQuotes(s string) bool {
	return s == "" || s[0] == '"' || s[0] == '\'' || strings.ContainsAny(s, " \t\n\r\f>")
}

// srcsetURLs returns the [start,end) spans of the URLs of the candidates of
// a srcset value, following the HTML "parse a srcset attribute" steps.
func srcsetURLs(v string, spans [][2]int) [][2]int {
	i, n := 0, len(v)
	for {
		for i < n && (isHTMLSpace(v[i]) || v[i] == ',') {
			i++
		}
		if i >= n {
			return spans
		}
		start := i
		for i < n && !isHTMLSpace(v[i]) {
			i++
		}
		end := i
		if v[end-1] == ',' {
			for end > start && v[end-1] == ',' {
				end--
			}
		} else {
			// Skip the descriptors up to the next comma outside parentheses.
			depth := 0
			for i < n {
				c := v[i]
				if c == '(' {
					depth++
				} else if c == ')' && depth > 0 {
					depth--
				} else if c == ',' && depth == 0 {
					break
				}
				i++
			}
		}
		if end > start {
			spans = append(spans, [2]int{start, end})
		}
	}
}
