package cdn

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/netip"
	"net/url"
	"strings"
)

// Default values that [New] applies to a zero [Config].
const (
	// DefaultImmutableCacheControl is the Cache-Control of assets when
	// fingerprinting is on: the URL changes whenever the content does.
	DefaultImmutableCacheControl = "public, max-age=31536000, immutable"
	// DefaultCacheControl is the Cache-Control of assets without fingerprints.
	DefaultCacheControl = "public, max-age=86400"
	// DefaultMaxTokenSize bounds the bytes buffered for one HTML token.
	DefaultMaxTokenSize = 1 << 20
	// DefaultMaxURLSize bounds the bytes buffered for one URL in CSS.
	DefaultMaxURLSize = 8 << 10
	// DefaultVersionParam is the query parameter that carries a fingerprint.
	DefaultVersionParam = "v"
)

// DefaultPatterns select the usual static assets: images, stylesheets,
// scripts, fonts, audio and video, and everything under /static/.
var defaultPatterns = []string{
	"*.css", "*.js", "*.mjs",
	"*.png", "*.jpg", "*.jpeg", "*.gif", "*.webp", "*.avif", "*.svg", "*.ico", "*.bmp",
	"*.woff", "*.woff2", "*.ttf", "*.otf", "*.eot",
	"*.mp4", "*.webm", "*.ogv", "*.ogg", "*.mp3", "*.m4a", "*.wav",
	"/static/",
}

// DefaultPatterns returns the pattern set used when [Config.Patterns] is
// empty: images, CSS, JavaScript, fonts, audio, video and /static/.
func DefaultPatterns() []string {
	return append([]string(nil), defaultPatterns...)
}

// Config configures the rewriter of one route. Its zero value is not enough:
// Host is required.
type Config struct {
	// Route names the route in metrics and stats; a [Collector] holds one
	// Rewriter per route name. Default: "".
	Route string
	// Host is the CDN's base URL, such as "https://cdn.example.com" or
	// "http://cdn.localhost:8081". A path in it ("https://cdn.example.com/app")
	// is prefixed to every rewritten path. Required.
	Host string
	// Origins are the origins (scheme://host[:port]) whose absolute URLs are
	// offloadable, in addition to the page's own origin, which always is.
	// Default: none beyond the page's own origin.
	Origins []string
	// Patterns select offloadable paths: "*.ext"-style file-name globs
	// (matched case-insensitively against the last path segment), "/prefix/"
	// path prefixes, and "/dir/*.ext"-style globs over the whole path.
	// Default: [DefaultPatterns].
	Patterns []string
	// Fingerprint appends a version parameter (see VersionParam) from
	// Versioner to every rewritten URL whose version is known, so that the
	// asset can be cached as immutable. Default: false.
	Fingerprint bool
	// Versioner supplies versions when Fingerprint is on. Default: nil, which
	// means no URL gets a version even with Fingerprint on.
	Versioner Versioner
	// VersionParam is the query parameter name of the version. Default: "v".
	VersionParam string
	// AssetCacheControl is the Cache-Control for offloadable assets served as
	// the CDN's origin. Default: [DefaultImmutableCacheControl] for
	// fingerprinted requests when Fingerprint is on, [DefaultCacheControl]
	// otherwise.
	AssetCacheControl string
	// CDNHeader names a request header whose presence marks a request as a
	// CDN pull (for example "CDN-Loop" or "X-From-CDN"). Default: "", none.
	CDNHeader string
	// CDNHeaderValue, when set, is the value CDNHeader must contain (a
	// case-insensitive substring match, as in "CDN-Loop: cloudflare").
	// Default: "", any value.
	CDNHeaderValue string
	// CDNSources are the address ranges the CDN pulls from. Default: none.
	CDNSources []netip.Prefix
	// MaxTokenSize bounds the bytes the HTML tokenizer buffers for one token.
	// A longer token (a huge inline script, comment or data: URL) is copied
	// through unchanged and rewriting resumes after it. Values under 64 are
	// taken as 64. Default: 1 MiB. A stream holds at most about twice this.
	MaxTokenSize int
	// MaxURLSize bounds the bytes buffered for one url() or @import in CSS; a
	// longer URL is copied through unchanged. Default: 8 KiB.
	MaxURLSize int
}

// Versioner supplies the content version of an asset for fingerprinting,
// typically its ETag or a hash of its bytes. The gateway implements it.
//
// Version is called while a page streams, once per rewritten reference, and
// must not wait: it answers from what is already known and returns ok=false
// when the version is not known (yet). It must be safe for concurrent use.
type Versioner interface {
	Version(path string) (version string, ok bool)
}

// VersionerFunc adapts a function to a [Versioner].
type VersionerFunc func(path string) (string, bool)

// Version calls f(path).
func (f VersionerFunc) Version(path string) (string, bool) { return f(path) }

// ErrConfig is wrapped by every error of [New].
var ErrConfig = errors.New("cdn: invalid config")

// Rewriter rewrites asset URLs for one route and counts offload. See the
// package documentation for what it rewrites.
type Rewriter struct {
	cfg          Config
	host         string // CDN base without trailing slash
	origins      map[string]bool
	patterns     patternSet
	cacheControl string
	maxToken     int
	maxURL       int
	versionParam string
	stats        counters
}

// New validates cfg, applies defaults and returns a Rewriter. Errors wrap
// [ErrConfig] and name the offending field and value.
func New(cfg Config) (*Rewriter, error) {
	r := &Rewriter{cfg: cfg, origins: make(map[string]bool)}
	host, err := parseHost(cfg.Host)
	if err != nil {
		return nil, err
	}
	r.host = host
	for _, o := range cfg.Origins {
		key, err := parseOrigin(o)
		if err != nil {
			return nil, err
		}
		r.origins[key] = true
	}
	pats := cfg.Patterns
	if len(pats) == 0 {
		pats = defaultPatterns
	}
	if r.patterns, err = compilePatterns(pats); err != nil {
		return nil, err
	}
	r.cacheControl = cfg.AssetCacheControl
	r.maxToken = cfg.MaxTokenSize
	if r.maxToken <= 0 {
		r.maxToken = DefaultMaxTokenSize
	}
	if r.maxToken < 64 {
		r.maxToken = 64
	}
	r.maxURL = cfg.MaxURLSize
	if r.maxURL <= 0 {
		r.maxURL = DefaultMaxURLSize
	}
	r.versionParam = cfg.VersionParam
	if r.versionParam == "" {
		r.versionParam = DefaultVersionParam
	}
	if strings.ContainsAny(r.versionParam, "&=#? ") {
		return nil, fmt.Errorf("%w: version_param %q: must be a plain query parameter name", ErrConfig, cfg.VersionParam)
	}
	if cfg.CDNHeader != "" && strings.ContainsAny(cfg.CDNHeader, " :\r\n") {
		return nil, fmt.Errorf("%w: cdn_header %q: not a header name", ErrConfig, cfg.CDNHeader)
	}
	for _, p := range cfg.CDNSources {
		if !p.IsValid() {
			return nil, fmt.Errorf("%w: cdn_sources: invalid prefix %v", ErrConfig, p)
		}
	}
	return r, nil
}

func parseHost(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: host is required (the CDN's base URL, such as https://cdn.example.com)", ErrConfig)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: host %q: %w", ErrConfig, s, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https" && !(u.Scheme == "" && strings.HasPrefix(s, "//")):
		return "", fmt.Errorf("%w: host %q: scheme must be http or https", ErrConfig, s)
	case u.Host == "":
		return "", fmt.Errorf("%w: host %q: no host name", ErrConfig, s)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return "", fmt.Errorf("%w: host %q: must not have a query, fragment or user info", ErrConfig, s)
	}
	return strings.TrimRight(s, "/"), nil
}

// parseOrigin returns the canonical "scheme://host[:port]" of an origin.
func parseOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: origin %q: %w", ErrConfig, s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%w: origin %q: scheme must be http or https", ErrConfig, s)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%w: origin %q: no host name", ErrConfig, s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w: origin %q: an origin is scheme://host[:port], without path or query", ErrConfig, s)
	}
	return originKey(u.Scheme, u.Host), nil
}

// originKey canonicalises scheme and host: lower case, default port dropped.
func originKey(scheme, host string) string {
	scheme = strings.ToLower(scheme)
	host = strings.ToLower(host)
	if scheme == "http" {
		host = strings.TrimSuffix(host, ":80")
	} else if scheme == "https" {
		host = strings.TrimSuffix(host, ":443")
	}
	return scheme + "://" + host
}

// Host returns the CDN base URL that rewritten references start with.
func (r *Rewriter) Host() string { return r.host }

// Route returns the route name the Rewriter counts under.
func (r *Rewriter) Route() string { return r.cfg.Route }

// Kind is what a Rewriter does with a content type.
type Kind int

// The kinds of content.
const (
	KindNone Kind = iota // not rewritten
	KindHTML             // text/html
	KindCSS              // text/css
)

// KindOf returns the kind of a Content-Type header value.
func KindOf(contentType string) Kind {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(strings.SplitN(contentType, ";", 2)[0]))
	}
	switch mt {
	case "text/html":
		return KindHTML
	case "text/css":
		return KindCSS
	}
	return KindNone
}

// Rewritable reports whether bodies of contentType (a Content-Type header
// value) are rewritten: text/html and text/css.
func (r *Rewriter) Rewritable(contentType string) bool {
	return KindOf(contentType) != KindNone
}

// Result tells what one rewrite did.
type Result struct {
	// BytesIn and BytesOut count the body before and after rewriting.
	BytesIn, BytesOut int64
	// References counts the URLs rewritten to the CDN host.
	References int
	// Oversized counts tokens longer than MaxTokenSize (or URLs longer than
	// MaxURLSize) that were copied through without being looked at.
	Oversized int
}

// Rewrite copies src to dst, rewriting the asset URLs of a body of
// contentType served at page (which may be nil or lack scheme and host;
// relative references then resolve against "/"). Bodies that are not
// rewritable are copied unchanged. Memory use is bounded by MaxTokenSize,
// whatever the size of the body. The error is the first read or write error.
func (r *Rewriter) Rewrite(dst io.Writer, src io.Reader, page *url.URL, contentType string) (Result, error) {
	cw := &countWriter{w: dst}
	cr := &countReader{r: src}
	var res Result
	var err error
	switch KindOf(contentType) {
	case KindHTML:
		res, err = r.rewriteHTML(cw, cr, page)
		r.stats.htmlPages.Add(1)
	case KindCSS:
		w := r.newCSSWriter(cw, page)
		_, err = io.Copy(w, cr)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		res = w.res
		r.stats.cssPages.Add(1)
	default:
		_, err = io.Copy(cw, cr)
	}
	res.BytesIn, res.BytesOut = cr.n, cw.n
	r.stats.references.Add(int64(res.References))
	r.stats.oversized.Add(int64(res.Oversized))
	return res, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
