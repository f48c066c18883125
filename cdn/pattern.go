package cdn

import (
	"fmt"
	"path"
	"strings"
)

// patternSet holds compiled offload patterns.
type patternSet struct {
	exts     map[string]bool // "*.ext": lower-case suffix ".ext" of the last segment
	names    []string        // other file-name globs, lower case, matched with path.Match
	prefixes []string        // "/prefix/"
	globs    []string        // "/dir/*.ext": path.Match over the whole path
}

func compilePatterns(pats []string) (patternSet, error) {
	ps := patternSet{exts: make(map[string]bool)}
	for _, p := range pats {
		if p == "" {
			return ps, fmt.Errorf("%w: patterns: empty pattern", ErrConfig)
		}
		if _, err := path.Match(p, ""); err != nil {
			return ps, fmt.Errorf("%w: pattern %q: %w", ErrConfig, p, err)
		}
		meta := strings.ContainsAny(p, "*?[\\")
		switch {
		case strings.HasPrefix(p, "/") && !meta:
			ps.prefixes = append(ps.prefixes, p)
		case strings.HasPrefix(p, "/"):
			ps.globs = append(ps.globs, p)
		case strings.Contains(p, "/"):
			return ps, fmt.Errorf("%w: pattern %q: must be a file-name glob such as \"*.png\" or start with / (a path prefix such as \"/static/\")", ErrConfig, p)
		case strings.HasPrefix(p, "*.") && !strings.ContainsAny(p[2:], "*?[\\"):
			ps.exts[strings.ToLower(p[1:])] = true
		default:
			ps.names = append(ps.names, strings.ToLower(p))
		}
	}
	return ps, nil
}

// matchSplit is match(dir + p) without building the string when it can.
func (ps *patternSet) matchSplit(dir, p string) bool {
	if dir == "" || len(ps.prefixes) == 0 && len(ps.globs) == 0 {
		return ps.match(p)
	}
	return ps.match(dir + p)
}

// match reports whether the (decoded) URL path p is offloadable.
func (ps *patternSet) match(p string) bool {
	for _, pre := range ps.prefixes {
		if strings.HasPrefix(p, pre) {
			return true
		}
	}
	base := p[strings.LastIndexByte(p, '/')+1:]
	if dot := strings.LastIndexByte(base, '.'); dot >= 0 && len(ps.exts) > 0 {
		ext := base[dot:]
		if ps.exts[ext] || (hasUpper(ext) && ps.exts[strings.ToLower(ext)]) {
			return true
		}
	}
	if len(ps.names) > 0 && base != "" {
		lb := strings.ToLower(base)
		for _, g := range ps.names {
			if ok, _ := path.Match(g, lb); ok {
				return true
			}
		}
	}
	for _, g := range ps.globs {
		if ok, _ := path.Match(g, p); ok {
			return true
		}
	}
	return false
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// IsAsset reports whether a request path (decoded, without query) is
// offloadable under the configured patterns.
func (r *Rewriter) IsAsset(path string) bool {
	return r.patterns.match(path)
}
