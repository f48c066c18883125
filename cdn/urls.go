package cdn

import (
	"net/url"
	"strings"
)

// resolver resolves and rewrites the references of one page.
type resolver struct {
	r       *Rewriter
	page    *url.URL
	base    *url.URL
	self    string // origin key of the page, "" when the page has no host
	hasBase bool
	// For the fast path: whether the base URL is on an origin of ours, and
	// its directory ("/a/b/" of "/a/b/c.html") when that is plain.
	baseOurs bool
	baseDir  string
	n        int // references rewritten
}

func (r *Rewriter) newResolver(page *url.URL) *resolver {
	rs := &resolver{r: r}
	if page == nil {
		page = &url.URL{Path: "/"}
	}
	p := *page
	if p.Path == "" && p.Opaque == "" {
		p.Path = "/"
	}
	if p.Host != "" {
		if p.Scheme == "" {
			p.Scheme = "http"
		}
		rs.self = originKey(p.Scheme, p.Host)
	}
	rs.page = &p
	rs.setBaseURL(&p)
	return rs
}

// setBaseURL sets the base URL and what the fast path needs of it.
func (rs *resolver) setBaseURL(b *url.URL) {
	rs.base = b
	rs.baseOurs = b.Opaque == "" && b.User == nil && rs.ours(b)
	rs.baseDir = ""
	if p := b.EscapedPath(); strings.HasPrefix(p, "/") && isSafePath(p) && !hasDotSegment(p) {
		rs.baseDir = p[:strings.LastIndexByte(p, '/')+1]
	}
}

// setBase applies a <base href>; only the first one counts, as in browsers.
func (rs *resolver) setBase(href string) {
	if rs.hasBase {
		return
	}
	rs.hasBase = true
	u, err := url.Parse(strings.TrimSpace(href))
	if err != nil {
		return
	}
	rs.setBaseURL(rs.page.ResolveReference(u))
}

// ours reports whether a resolved URL is served by the origin behind the CDN.
func (rs *resolver) ours(u *url.URL) bool {
	if u.Host == "" {
		return u.Scheme == "" || u.Scheme == "http" || u.Scheme == "https"
	}
	k := originKey(u.Scheme, u.Host)
	return k == rs.self || rs.r.origins[k]
}

// rewrite returns the CDN URL for reference v (already free of surrounding
// white space and entity-decoded), or false when v is not offloadable.
func (rs *resolver) rewrite(v string) (string, bool) {
	if v == "" || v[0] == '#' {
		return "", false
	}
	// Reject other schemes (data:, blob:, javascript:, mailto:, ...) before
	// parsing.
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == ':' {
			s := strings.ToLower(v[:i])
			if s != "http" && s != "https" {
				return "", false
			}
			break
		}
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			break
		}
	}
	if u, ok, decided := rs.fast(v); decided {
		return u, ok
	}
	return rs.slow(v)
}

// slow resolves v with net/url. Its result is the definition that fast must
// agree with.
func (rs *resolver) slow(v string) (string, bool) {
	ref, err := url.Parse(v)
	if err != nil || ref.Opaque != "" || ref.User != nil {
		return "", false
	}
	u := rs.base.ResolveReference(ref)
	if !rs.ours(u) || !rs.r.patterns.match(u.Path) {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(rs.r.host) + len(v) + 16)
	b.WriteString(rs.r.host)
	p := u.EscapedPath()
	if p == "" || p[0] != '/' {
		b.WriteByte('/')
	}
	b.WriteString(p)
	q := u.RawQuery
	if q != "" || u.ForceQuery {
		b.WriteByte('?')
		b.WriteString(q)
	}
	if rs.r.cfg.Fingerprint && rs.r.cfg.Versioner != nil && !hasParam(q, rs.r.versionParam) {
		if ver, ok := rs.r.cfg.Versioner.Version(u.Path); ok && ver != "" {
			if q == "" && !u.ForceQuery {
				b.WriteByte('?')
			} else if q != "" {
				b.WriteByte('&')
			}
			b.WriteString(rs.r.versionParam)
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(ver))
		}
	}
	if u.Fragment != "" || u.RawFragment != "" {
		b.WriteByte('#')
		b.WriteString(u.EscapedFragment())
	}
	rs.n++
	return b.String(), true
}

// hasParam reports whether the raw query q has parameter name.
func hasParam(q, name string) bool {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, _, _ := strings.Cut(kv, "=")
		if k == name {
			return true
		}
	}
	return false
}

// fast rewrites the common references without net/url: paths made of plain
// characters, root-relative or relative to a plain base directory, with no
// dot segments. decided is false when v needs the general resolution.
func (rs *resolver) fast(v string) (u string, ok, decided bool) {
	if rs.r.cfg.Fingerprint {
		return "", false, false
	}
	abs := false
	if scheme, hostPath, ok := splitAbsolute(v, rs.base.Scheme); ok {
		// An absolute or scheme-relative URL: decide by its origin, then
		// treat its path as root-relative.
		end := strings.IndexAny(hostPath, "/?#")
		if end <= 0 || hostPath[end] != '/' || !isPlainHost(hostPath[:end]) {
			return "", false, false
		}
		k := originKey(scheme, hostPath[:end])
		if k != rs.self && !rs.r.origins[k] {
			return "", false, true
		}
		v, abs = hostPath[end:], true
	} else if !rs.baseOurs {
		return "", false, false
	}
	p, rest := v, ""
	if i := strings.IndexAny(v, "?#"); i >= 0 {
		p, rest = v[:i], v[i:]
	}
	if abs && strings.HasPrefix(p, "//") {
		return "", false, false
	}
	if p == "" || !isSafePath(p) || strings.IndexByte(p, ':') >= 0 || !isSafeRest(rest) {
		return "", false, false
	}
	dir := ""
	switch {
	case strings.HasPrefix(p, "//"):
		return "", false, false
	case p[0] == '/':
	case rs.baseDir == "":
		return "", false, false
	default:
		dir = rs.baseDir
	}
	if hasDotSegment(p) {
		return "", false, false
	}
	if !rs.r.patterns.matchSplit(dir, p) {
		return "", false, true
	}
	rs.n++
	return rs.r.host + dir + p + rest, true, true
}

// isSafePath reports whether p has only characters that net/url keeps as
// they are in a path (unreserved and sub-delimiters, "/", "@").
func isSafePath(p string) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~/!$&'()*+,;=@", c) >= 0) {
			return false
		}
	}
	return true
}

// isSafeRest reports whether a query and fragment come out of net/url as
// they went in.
func isSafeRest(r string) bool {
	if strings.HasSuffix(r, "#") {
		return false // net/url drops an empty fragment
	}
	frag := false
	for i := 0; i < len(r); i++ {
		c := r[i]
		if c <= ' ' || c >= 0x7f || c == '\\' || c == '"' || c == '<' || c == '>' || c == '^' || c == '`' || c == '{' || c == '|' || c == '}' || c == '[' || c == ']' {
			return false
		}
		if c == '#' {
			if frag {
				return false
			}
			frag = true
		}
		if frag && c == '%' {
			return false
		}
	}
	return true
}

// hasDotSegment reports whether path p has a "." or ".." segment.
func hasDotSegment(p string) bool {
	for p != "" {
		var seg string
		seg, p, _ = strings.Cut(p, "/")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// splitAbsolute splits "http://host/p", "https://host/p" (any case) and
// "//host/p" (taking the base's scheme) into scheme and "host/p".
func splitAbsolute(v, baseScheme string) (scheme, hostPath string, ok bool) {
	switch {
	case len(v) > 7 && strings.EqualFold(v[:7], "http://"):
		return "http", v[7:], true
	case len(v) > 8 && strings.EqualFold(v[:8], "https://"):
		return "https", v[8:], true
	case strings.HasPrefix(v, "//") && (baseScheme == "http" || baseScheme == "https"):
		return baseScheme, v[2:], true
	}
	return "", "", false
}

// isPlainHost reports whether h is a host[:port] made of letters, digits,
// dots and hyphens, which net/url takes as it is (up to case).
func isPlainHost(h string) bool {
	colon := strings.IndexByte(h, ':')
	name, port := h, ""
	if colon >= 0 {
		name, port = h[:colon], h[colon+1:]
		if port == "" {
			return false
		}
	}
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	return true
}
