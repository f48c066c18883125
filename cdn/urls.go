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
	n       int // references rewritten
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
	rs.page, rs.base = &p, &p
	return rs
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
	rs.base = rs.page.ResolveReference(u)
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
