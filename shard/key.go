package shard

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// DefaultBuckets is the number of logical buckets of a hash keyspace when
// NewHashMap is given none.
const DefaultBuckets = 4096

type keyKind uint8

const (
	kindNone keyKind = iota
	kindInt
	kindString
)

// Key is a shard key: an integer or a string. Build one with IntKey or
// StringKey; the zero Key is "no key" (an unbounded end of a Range). Keys
// are small values, passed by value without allocating.
type Key struct {
	s    string
	n    int64
	kind keyKind
}

// IntKey returns the shard key of an integer (a customer or tenant id...).
func IntKey(n int64) Key { return Key{n: n, kind: kindInt} }

// StringKey returns the shard key of a string.
func StringKey(s string) Key { return Key{s: s, kind: kindString} }

// IsZero reports whether k is the zero Key (no key).
func (k Key) IsZero() bool { return k.kind == kindNone }

// IsInt reports whether k was built by IntKey.
func (k Key) IsInt() bool { return k.kind == kindInt }

// String returns the key as text: the decimal form of an integer key, the
// string itself for a string key, "" for the zero Key. The directory
// strategy stores keys in this form.
func (k Key) String() string {
	switch k.kind {
	case kindInt:
		return strconv.FormatInt(k.n, 10)
	case kindString:
		return k.s
	}
	return ""
}

// Hash returns the key's stable 64-bit hash: XXH64 (seed 0,
// github.com/cespare/xxhash/v2) of the string's bytes, or of the integer's
// 8 bytes in big-endian order. It never changes between releases or
// processes: buckets on disk depend on it.
func (k Key) Hash() uint64 {
	if k.kind == kindInt {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(k.n))
		return xxhash.Sum64(b[:])
	}
	return xxhash.Sum64String(k.s)
}

// BucketOf returns the logical bucket of k among n buckets: Hash(k) mod n.
func BucketOf(k Key, n int) int {
	return int(k.Hash() % uint64(n))
}

// compareKeys orders keys: integers numerically, strings bytewise. Keys
// of different kinds are not comparable; ok is false for them.
func compareKeys(a, b Key) (c int, ok bool) {
	if a.kind != b.kind {
		return 0, false
	}
	if a.kind == kindInt {
		switch {
		case a.n < b.n:
			return -1, true
		case a.n > b.n:
			return 1, true
		}
		return 0, true
	}
	return strings.Compare(a.s, b.s), true
}

// MarshalJSON encodes an integer key as a JSON number, a string key as a
// JSON string, the zero Key as null.
func (k Key) MarshalJSON() ([]byte, error) {
	switch k.kind {
	case kindInt:
		return []byte(strconv.FormatInt(k.n, 10)), nil
	case kindString:
		return json.Marshal(k.s)
	}
	return []byte("null"), nil
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (k *Key) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	switch {
	case s == "null":
		*k = Key{}
	case strings.HasPrefix(s, `"`):
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return fmt.Errorf("shard: key: %w", err)
		}
		*k = StringKey(str)
	default:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("shard: key %s: not an integer or a string", s)
		}
		*k = IntKey(n)
	}
	return nil
}
