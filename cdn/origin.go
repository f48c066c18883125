package cdn

import (
	"net/netip"
	"strings"
)

// corsExts are the extensions of assets that browsers fetch cross-origin
// in CORS mode, and so use only with Access-Control-Allow-Origin: fonts
// always, module scripts and modulepreload always, scripts and stylesheets
// with a crossorigin attribute (as subresource integrity requires), text
// tracks.
var corsExts = [...]string{".woff2", ".woff", ".ttf", ".otf", ".eot", ".js", ".mjs", ".css", ".vtt", ".json"}

// NeedsCORS reports whether the asset at path is one that browsers load
// from another origin only with Access-Control-Allow-Origin: fonts,
// scripts, stylesheets, text tracks and JSON.
func NeedsCORS(path string) bool {
	p := strings.ToLower(path)
	for _, e := range corsExts {
		if strings.HasSuffix(p, e) {
			return true
		}
	}
	return false
}

// Headers are the response headers to set on an asset served as the CDN's
// origin. An empty field means: leave that header as the app sent it.
type Headers struct {
	CacheControl             string
	AccessControlAllowOrigin string
	Vary                     string
}

// AssetHeaders returns the headers for a response to a request for path
// (decoded, without query) with raw query rawQuery and request header Origin
// origin (may be empty), and whether path is an offloadable asset at all.
//
// Cache-Control is Config.AssetCacheControl if set; otherwise, with
// Fingerprint on and the version parameter present in the query, it is
// "public, max-age=31536000, immutable", and "public, max-age=86400" in all
// other cases (an unversioned URL must not be cached as immutable).
//
// Fonts, scripts, stylesheets, text tracks and JSON ([NeedsCORS]) get
// Access-Control-Allow-Origin: the request's Origin when it is
// one of Config.Origins (with Vary: Origin, since the answer depends on it),
// the only configured origin when there is exactly one and the request has
// no Origin, and "*" when no origins are configured.
func (r *Rewriter) AssetHeaders(path, rawQuery, origin string) (Headers, bool) {
	if !r.IsAsset(path) {
		return Headers{}, false
	}
	var h Headers
	switch {
	case r.cacheControl != "":
		h.CacheControl = r.cacheControl
	case r.cfg.Fingerprint && hasParam(rawQuery, r.versionParam):
		h.CacheControl = DefaultImmutableCacheControl
	default:
		h.CacheControl = DefaultCacheControl
	}
	if NeedsCORS(path) {
		switch {
		case len(r.cfg.Origins) == 0:
			h.AccessControlAllowOrigin = "*"
		case origin != "":
			if k, err := parseOrigin(origin); err == nil && r.origins[k] {
				h.AccessControlAllowOrigin = origin
			}
			h.Vary = "Origin"
		case len(r.cfg.Origins) == 1:
			h.AccessControlAllowOrigin = strings.TrimRight(r.cfg.Origins[0], "/")
			h.Vary = "Origin"
		default:
			h.Vary = "Origin"
		}
	}
	return h, true
}

// FromCDN reports whether a request is a CDN pull: it came from one of
// Config.CDNSources, or carries Config.CDNHeader (with CDNHeaderValue in it
// when that is set). header looks up a request header by name.
func (r *Rewriter) FromCDN(remote netip.Addr, header func(name string) string) bool {
	if remote.IsValid() {
		a := remote.Unmap()
		for _, p := range r.cfg.CDNSources {
			if p.Contains(a) {
				return true
			}
		}
	}
	if r.cfg.CDNHeader != "" && header != nil {
		v := header(r.cfg.CDNHeader)
		if v != "" && (r.cfg.CDNHeaderValue == "" || strings.Contains(strings.ToLower(v), strings.ToLower(r.cfg.CDNHeaderValue))) {
			return true
		}
	}
	return false
}

// RecordAsset counts one asset response of n body bytes, served to the CDN
// (fromCDN) or directly to a user.
func (r *Rewriter) RecordAsset(fromCDN bool, n int64) {
	if fromCDN {
		r.stats.cdnRequests.Add(1)
		r.stats.cdnBytes.Add(n)
	} else {
		r.stats.directRequests.Add(1)
		r.stats.directBytes.Add(n)
	}
}
