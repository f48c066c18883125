package cdn

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"strconv"
	"sync"
)

// ETagVersion turns an ETag (strong or weak, quoted or not) into a short
// URL-safe version string; "" for an empty ETag.
func ETagVersion(etag string) string {
	if etag == "" {
		return ""
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(etag))
	return strconv.FormatUint(h.Sum64(), 36)
}

// ContentVersion returns a short version string for an asset's bytes: the
// first 12 hex digits of their SHA-256.
func ContentVersion(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:6])
}

// DefaultVersionMapSize is the number of paths a zero VersionMap remembers.
const DefaultVersionMapSize = 10000

// VersionMap is a [Versioner] that remembers the versions the gateway has
// seen, typically from the ETag of asset responses it served as the CDN's
// origin (see [ETagVersion]). A page rewritten before an asset's version is
// known gets the unversioned URL. It is safe for concurrent use; its zero
// value is ready to use.
type VersionMap struct {
	// MaxEntries bounds the number of paths remembered; when full, an
	// arbitrary entry is forgotten for each new one. Default: 10000.
	MaxEntries int

	mu sync.RWMutex
	m  map[string]string
}

var _ Versioner = (*VersionMap)(nil)

// Set records the version of path (decoded, without query); an empty
// version forgets it.
func (v *VersionMap) Set(path, version string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if version == "" {
		delete(v.m, path)
		return
	}
	if v.m == nil {
		v.m = make(map[string]string)
	}
	limit := v.MaxEntries
	if limit <= 0 {
		limit = DefaultVersionMapSize
	}
	if _, ok := v.m[path]; !ok && len(v.m) >= limit {
		for k := range v.m {
			delete(v.m, k)
			break
		}
	}
	v.m[path] = version
}

// Version implements [Versioner].
func (v *VersionMap) Version(path string) (string, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s, ok := v.m[path]
	return s, ok
}

// Len returns the number of paths remembered.
func (v *VersionMap) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.m)
}
