package httpcache

import (
	"strconv"
	"strings"
	"time"
)

// Directives are the parsed Cache-Control directives this cache acts on.
// Durations are -1 when the directive is absent.
type Directives struct {
	MaxAge, SMaxAge, MaxStale, MinFresh  time.Duration
	StaleWhileRevalidate, StaleIfError   time.Duration
	NoStore, NoCache, Private, Public    bool
	MustRevalidate, ProxyRevalidate      bool
	OnlyIfCached, NoTransform, Immutable bool
	MaxStaleAny                          bool // max-stale without a value
	NoCacheFields, PrivateFields         bool // no-cache="..." / private="..." (treated as the bare directive)
}

// ParseCacheControl parses the values of one or more Cache-Control header
// fields. Unknown directives are ignored; a malformed delta-seconds makes
// its directive count as present with value 0 (RFC 9111 §4.2.1: a cache
// treats an invalid freshness directive as stale).
func ParseCacheControl(values ...string) Directives {
	d := Directives{MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1, StaleWhileRevalidate: -1, StaleIfError: -1}
	for _, v := range values {
		for len(v) > 0 {
			var item string
			item, v = nextItem(v)
			name, arg, hasArg := strings.Cut(item, "=")
			name = strings.ToLower(strings.TrimSpace(name))
			arg = strings.TrimSpace(arg)
			switch name {
			case "max-age":
				d.MaxAge = seconds(arg)
			case "s-maxage":
				d.SMaxAge = seconds(arg)
			case "max-stale":
				if hasArg {
					d.MaxStale = seconds(arg)
				} else {
					d.MaxStaleAny = true
				}
			case "min-fresh":
				d.MinFresh = seconds(arg)
			case "stale-while-revalidate":
				d.StaleWhileRevalidate = seconds(arg)
			case "stale-if-error":
				d.StaleIfError = seconds(arg)
			case "no-store":
				d.NoStore = true
			case "no-cache":
				d.NoCache = true
				d.NoCacheFields = hasArg
			case "private":
				d.Private = true
				d.PrivateFields = hasArg
			case "public":
				d.Public = true
			case "must-revalidate":
				d.MustRevalidate = true
			case "proxy-revalidate":
				d.ProxyRevalidate = true
			case "only-if-cached":
				d.OnlyIfCached = true
			case "no-transform":
				d.NoTransform = true
			case "immutable":
				d.Immutable = true
			}
		}
	}
	return d
}

// nextItem splits off the first comma-separated item, honouring quoted
// strings (no-cache="Set-Cookie, Foo").
func nextItem(s string) (item, rest string) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			return strings.TrimSpace(s[:i]), s[i+1:]
		}
	}
	return strings.TrimSpace(s), ""
}

// maxDelta caps delta-seconds (RFC 9111 §1.2.2: 2^31 is "infinity").
const maxDelta = 1 << 31

func seconds(s string) time.Duration {
	s = strings.Trim(s, `"`)
	if s == "" {
		return 0
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > maxDelta {
		n = maxDelta
	}
	return time.Duration(n) * time.Second
}
