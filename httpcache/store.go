package httpcache

import (
	"context"
	"fmt"
	"net/textproto"
	"strings"
	"time"

	"github.com/scaleout/scaleout/cache"
)

// Store keeps responses in a cache.Cache. Every node whose Store uses a
// cache with the same Redis and prefix shares entries and purges.
type Store struct {
	c   *cache.Cache
	now func() time.Time
}

// NewStore returns a Store over c. now is the clock; nil means time.Now.
func NewStore(c *cache.Cache, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{c: c, now: now}
}

// Key is the primary key of a request: scheme, host (lowercased) and the
// request target (path and query, as sent).
func Key(scheme, host, target string) string {
	return scheme + "://" + strings.ToLower(host) + target
}

// Lookup returns the stored entry for a request whose header values are
// given by header (canonical names), and its variant key. ok is false on
// a miss or an undecodable entry.
func (s *Store) Lookup(ctx context.Context, primary string, header func(name string) string) (e *Entry, variant string, ok bool) {
	it, found := s.c.Get(ctx, primary)
	if !found || len(it.Value) == 0 {
		return nil, primary, false
	}
	variant = primary
	if it.Value[0] == kindVary {
		variant = variantKey(primary, decodeVary(it.Value), header)
		if it, found = s.c.Get(ctx, variant); !found {
			return nil, variant, false
		}
	}
	e, err := UnmarshalEntry(it.Value)
	if err != nil {
		return nil, variant, false
	}
	return e, variant, true
}

// VariantKey returns the key an entry for this request is stored under,
// given the response's Vary header names.
func VariantKey(primary string, vary []string, header func(name string) string) string {
	if len(vary) == 0 {
		return primary
	}
	return variantKey(primary, vary, header)
}

func variantKey(primary string, vary []string, header func(string) string) string {
	var b strings.Builder
	b.WriteString(primary)
	for _, name := range vary {
		b.WriteString("\x00")
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(strings.Join(strings.Fields(header(name)), " "))
	}
	return b.String()
}

// ParseVary returns the canonical header names of Vary values, sorted as
// given and without duplicates.
func ParseVary(values ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			f = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(f))
			if f != "" && !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out
}

func encodeVary(names []string) []byte {
	return append([]byte{kindVary}, strings.Join(names, ",")...)
}

func decodeVary(b []byte) []string {
	if len(b) < 2 {
		return nil
	}
	return strings.Split(string(b[1:]), ",")
}

// ParseTags splits Cache-Tag / Surrogate-Key values (comma- or
// space-separated) into tags.
func ParseTags(values ...string) []string {
	var out []string
	for _, v := range values {
		out = append(out, strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })...)
	}
	return out
}

func urlTag(primary string) string { return "u:" + primary }
func userTag(t string) string      { return "t:" + t }

// Put stores e for primary, under the variant its vary names select.
func (s *Store) Put(ctx context.Context, primary string, vary []string, header func(string) string, e *Entry, tags []string) error {
	keep := e.retention(s.now())
	if keep <= 0 {
		return nil
	}
	val, err := e.MarshalBinary()
	if err != nil {
		return err
	}
	all := []string{urlTag(primary)}
	for _, t := range tags {
		all = append(all, userTag(t))
	}
	key := primary
	if len(vary) > 0 {
		key = variantKey(primary, vary, header)
		// The vary record lives as long as the longest-lived variant could.
		if err := s.c.Set(ctx, primary, cache.Item{Value: encodeVary(vary), TTL: max(keep, revalidateKeep), Tags: all[:1]}); err != nil {
			return fmt.Errorf("storing vary record: %w", err)
		}
	}
	if err := s.c.Set(ctx, key, cache.Item{Value: val, TTL: keep, Tags: all}); err != nil {
		return fmt.Errorf("storing entry: %w", err)
	}
	return nil
}

// PurgeURL removes every stored variant of primary, on every node.
func (s *Store) PurgeURL(ctx context.Context, primary string) error {
	return s.c.InvalidateTags(ctx, urlTag(primary))
}

// PurgeTags removes every entry carrying one of tags, on every node.
func (s *Store) PurgeTags(ctx context.Context, tags ...string) error {
	ts := make([]string, 0, len(tags))
	for _, t := range tags {
		if t != "" {
			ts = append(ts, userTag(t))
		}
	}
	if len(ts) == 0 {
		return nil
	}
	return s.c.InvalidateTags(ctx, ts...)
}

// Stats returns the underlying cache's statistics.
func (s *Store) Stats() cache.Stats { return s.c.Stats() }
