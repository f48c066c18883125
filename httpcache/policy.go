package httpcache

import (
	"net/http"
	"strings"
	"time"
)

// Options are a route's caching choices. The zero value stores only
// responses with explicit freshness, up to 1 MiB each.
type Options struct {
	// DefaultTTL is the freshness given to a cacheable response that has
	// none of its own. Default 0: such responses are not stored (no
	// heuristic freshness).
	DefaultTTL time.Duration
	// MaxObjectBytes bounds a stored body; larger responses stream through
	// uncached. Default 1 MiB.
	MaxObjectBytes int64
	// StoreSetCookie allows storing responses that carry Set-Cookie (the
	// cookie is then stripped from what is stored and served from cache).
	// Default false: such responses are not stored.
	StoreSetCookie bool
}

func (o Options) withDefaults() Options {
	if o.MaxObjectBytes <= 0 {
		o.MaxObjectBytes = 1 << 20
	}
	return o
}

// cacheableStatus are the statuses RFC 9110 §15.1 calls heuristically
// cacheable; others are stored only with explicit freshness.
func cacheableStatus(code int) bool {
	switch code {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// Decision says whether and for how long a response may be stored.
type Decision struct {
	// Store is true when the response may be stored.
	Store bool
	// Reason explains a refusal, for logs and the X-Cache-Reason header.
	Reason string
	// Lifetime is the freshness lifetime.
	Lifetime time.Duration
}

// Storable decides whether a shared cache may store the response to a
// request. reqCC and hasAuth describe the request; status, respCC and h the
// response (h needs Expires, Date, Vary, Set-Cookie).
func Storable(method string, reqCC Directives, hasAuth bool, status int, respCC Directives, h http.Header, opt Options) Decision {
	opt = opt.withDefaults()
	switch {
	case method != http.MethodGet:
		return Decision{Reason: "method"}
	case reqCC.NoStore:
		return Decision{Reason: "request no-store"}
	case respCC.NoStore:
		return Decision{Reason: "no-store"}
	case respCC.Private:
		return Decision{Reason: "private"}
	case status == http.StatusPartialContent || status < 200 || status == http.StatusNotModified:
		return Decision{Reason: "status"}
	case hasAuth && !respCC.Public && respCC.SMaxAge < 0 && !respCC.MustRevalidate:
		return Decision{Reason: "authorization"}
	case h.Get("Set-Cookie") != "" && !opt.StoreSetCookie:
		return Decision{Reason: "set-cookie"}
	case strings.Contains(strings.Join(h.Values("Vary"), ","), "*"):
		return Decision{Reason: "vary *"}
	}
	life, explicit := Lifetime(respCC, h)
	if !explicit {
		// An error status is never stored on a default TTL.
		if opt.DefaultTTL <= 0 || !cacheableStatus(status) || status >= 400 {
			return Decision{Reason: "no freshness"}
		}
		life = opt.DefaultTTL
	}
	if life <= 0 && h.Get("ETag") == "" && h.Get("Last-Modified") == "" {
		return Decision{Reason: "stale on arrival"}
	}
	return Decision{Store: true, Lifetime: life}
}

// Lifetime is the freshness lifetime a response gives itself: s-maxage,
// else max-age, else Expires − Date (RFC 9111 §4.2.1). explicit is false
// when it gives none.
func Lifetime(cc Directives, h http.Header) (life time.Duration, explicit bool) {
	switch {
	case cc.SMaxAge >= 0:
		return cc.SMaxAge, true
	case cc.MaxAge >= 0:
		return cc.MaxAge, true
	}
	exp := h.Get("Expires")
	if exp == "" {
		return 0, false
	}
	t, err := http.ParseTime(exp)
	if err != nil {
		return 0, true // an invalid Expires means already expired
	}
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		date = time.Now()
	}
	return max(t.Sub(date), 0), true
}

// UnsafeMethod reports whether a successful request with method must
// invalidate the stored responses of its URL (RFC 9111 §4.4).
func UnsafeMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return false
	}
	return true
}

// ETagMatch reports whether an If-None-Match value matches etag, by weak
// comparison (RFC 9110 §13.1.2).
func ETagMatch(ifNoneMatch, etag string) bool {
	if etag == "" {
		return false
	}
	if strings.TrimSpace(ifNoneMatch) == "*" {
		return true
	}
	want := strings.TrimPrefix(etag, "W/")
	for len(ifNoneMatch) > 0 {
		var item string
		item, ifNoneMatch = nextItem(ifNoneMatch)
		if strings.TrimPrefix(item, "W/") == want {
			return true
		}
	}
	return false
}

// NotModifiedSince reports whether a stored response with Last-Modified
// lastModified satisfies If-Modified-Since ims (RFC 9110 §13.1.3).
func NotModifiedSince(ims, lastModified string) bool {
	if ims == "" || lastModified == "" {
		return false
	}
	t, err1 := http.ParseTime(ims)
	lm, err2 := http.ParseTime(lastModified)
	return err1 == nil && err2 == nil && !lm.After(t)
}

// hopByHop are headers a cache neither stores nor serves.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Age": true,
	"Set-Cookie": true, "X-Cache": true, "X-Request-Id": true,
}
