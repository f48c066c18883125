package shard

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Strategy is how a keyspace maps keys to shards.
type Strategy string

const (
	// Hash: a key goes to one of a fixed number of logical buckets by its
	// stable hash (Key.Hash mod the number of buckets); each bucket belongs
	// to one shard through Map.Buckets. Adding a shard moves whole buckets.
	Hash Strategy = "hash"
	// RangeStrategy: explicit, non-overlapping ranges of integer or string
	// keys (Map.Ranges). A key outside every range is ErrOutOfRange.
	RangeStrategy Strategy = "range"
	// Directory: an explicit key → shard table in the metadata database,
	// cached in memory. An unknown key is placed on the shard with the
	// fewest keys, recorded atomically so that every node agrees.
	Directory Strategy = "directory"
)

// ShardSpec names a shard and lists the nodes of its replica cluster.
type ShardSpec struct {
	// Name identifies the shard in maps, directory entries and metrics.
	Name string `json:"name"`
	// Nodes are the DSNs of the shard's nodes (primary and replicas), as
	// replica.Config.Nodes takes them.
	Nodes []string `json:"nodes"`
}

// Range is a half-open key range [From, To) owned by Shard. A zero From
// is unbounded below, a zero To unbounded above.
type Range struct {
	From  Key    `json:"from"`
	To    Key    `json:"to"`
	Shard string `json:"shard"`
}

// contains reports whether k is in r.
func (r Range) contains(k Key) bool {
	if !r.From.IsZero() {
		if c, ok := compareKeys(k, r.From); !ok || c < 0 {
			return false
		}
	}
	if !r.To.IsZero() {
		if c, ok := compareKeys(k, r.To); !ok || c >= 0 {
			return false
		}
	}
	return true
}

// Map is one version of a keyspace's placement. It is durable in the
// metadata database (Store) and immutable once published: a change is a
// new Map with the next Version.
type Map struct {
	// Keyspace names the set of keys (and tables) the map places.
	Keyspace string `json:"keyspace"`
	// Version increases by one with every published change.
	Version int64 `json:"version"`
	// Strategy is Hash, RangeStrategy or Directory.
	Strategy Strategy `json:"strategy"`
	// Shards are every shard of the keyspace.
	Shards []ShardSpec `json:"shards"`
	// Buckets (Hash): Buckets[b] is the name of the shard owning bucket b.
	// Its length is the number of buckets, fixed for the keyspace's life.
	Buckets []string `json:"buckets,omitempty"`
	// Frozen (Hash): buckets in the cutover of a move, whose writes are
	// held by For until the next version.
	Frozen []int `json:"frozen,omitempty"`
	// Ranges (RangeStrategy): sorted, non-overlapping.
	Ranges []Range `json:"ranges,omitempty"`
}

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrOutOfRange: a key of a range keyspace is in no range.
	ErrOutOfRange = errors.New("shard: key outside every range")
	// ErrCrossShard: the keys of one write live on different shards; the
	// write was refused, nothing was sent.
	ErrCrossShard = errors.New("shard: keys on different shards")
	// ErrMoving: the key's bucket is being moved to another shard and its
	// writes stayed held longer than Config.WriteHold.
	ErrMoving = errors.New("shard: bucket moving, writes held too long")
	// ErrUnknownKeyspace: the metadata database has no map for the keyspace.
	ErrUnknownKeyspace = errors.New("shard: unknown keyspace")
	// ErrConflict: another process published a map version first; reload
	// and retry.
	ErrConflict = errors.New("shard: map changed concurrently")
	// ErrRebalanceRunning: another process holds the keyspace's rebalance lock.
	ErrRebalanceRunning = errors.New("shard: a rebalance of this keyspace is running elsewhere")
	// ErrInvalidMap: a map failed Validate.
	ErrInvalidMap = errors.New("shard: invalid map")
)

// NewHashMap returns version 1 of a hash keyspace over shards, with
// buckets logical buckets (DefaultBuckets when 0) dealt round-robin.
func NewHashMap(keyspace string, buckets int, shards ...ShardSpec) *Map {
	if buckets <= 0 {
		buckets = DefaultBuckets
	}
	m := &Map{Keyspace: keyspace, Version: 1, Strategy: Hash, Shards: shards}
	if len(shards) > 0 {
		m.Buckets = make([]string, buckets)
		for b := range m.Buckets {
			m.Buckets[b] = shards[b%len(shards)].Name
		}
	}
	return m
}

// NewRangeMap returns version 1 of a range keyspace.
func NewRangeMap(keyspace string, ranges []Range, shards ...ShardSpec) *Map {
	return &Map{Keyspace: keyspace, Version: 1, Strategy: RangeStrategy, Shards: shards, Ranges: ranges}
}

// NewDirectoryMap returns version 1 of a directory keyspace.
func NewDirectoryMap(keyspace string, shards ...ShardSpec) *Map {
	return &Map{Keyspace: keyspace, Version: 1, Strategy: Directory, Shards: shards}
}

// Validate reports the first problem of m, wrapping ErrInvalidMap.
func (m *Map) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: keyspace %q: %s", ErrInvalidMap, m.Keyspace, fmt.Sprintf(format, a...))
	}
	if m.Keyspace == "" {
		return bad("empty keyspace name")
	}
	if len(m.Shards) == 0 {
		return bad("no shards")
	}
	names := make(map[string]bool, len(m.Shards))
	for i, s := range m.Shards {
		if s.Name == "" {
			return bad("shards[%d]: empty name", i)
		}
		if names[s.Name] {
			return bad("shards[%d]: duplicate name %q", i, s.Name)
		}
		if len(s.Nodes) == 0 {
			return bad("shard %q: no nodes", s.Name)
		}
		names[s.Name] = true
	}
	switch m.Strategy {
	case Hash:
		if len(m.Buckets) == 0 || len(m.Buckets) > 1<<20 {
			return bad("%d buckets, want 1..%d", len(m.Buckets), 1<<20)
		}
		for b, s := range m.Buckets {
			if !names[s] {
				return bad("bucket %d: unknown shard %q", b, s)
			}
		}
		for _, b := range m.Frozen {
			if b < 0 || b >= len(m.Buckets) {
				return bad("frozen bucket %d out of 0..%d", b, len(m.Buckets)-1)
			}
		}
	case RangeStrategy:
		if len(m.Ranges) == 0 {
			return bad("no ranges")
		}
		for i, r := range m.Ranges {
			if !names[r.Shard] {
				return bad("ranges[%d]: unknown shard %q", i, r.Shard)
			}
			if !r.From.IsZero() && !r.To.IsZero() {
				if c, ok := compareKeys(r.From, r.To); !ok {
					return bad("ranges[%d]: bounds of different kinds", i)
				} else if c >= 0 {
					return bad("ranges[%d]: from %s is not below to %s", i, r.From, r.To)
				}
			}
			if i > 0 {
				prev := m.Ranges[i-1]
				if prev.To.IsZero() || r.From.IsZero() {
					return bad("ranges[%d] overlaps ranges[%d]", i, i-1)
				}
				c, ok := compareKeys(prev.To, r.From)
				if !ok {
					return bad("ranges[%d]: bounds of different kinds", i)
				}
				if c > 0 {
					return bad("ranges[%d] overlaps ranges[%d] (not sorted?)", i, i-1)
				}
			}
		}
	case Directory:
	default:
		return bad("unknown strategy %q", m.Strategy)
	}
	return nil
}

// clone returns a deep copy of m.
func (m *Map) clone() *Map {
	c := *m
	c.Shards = slices.Clone(m.Shards)
	for i := range c.Shards {
		c.Shards[i].Nodes = slices.Clone(c.Shards[i].Nodes)
	}
	c.Buckets = slices.Clone(m.Buckets)
	c.Frozen = slices.Clone(m.Frozen)
	c.Ranges = slices.Clone(m.Ranges)
	return &c
}

// shardIndex returns the index of the named shard in m.Shards, or -1.
func (m *Map) shardIndex(name string) int {
	for i, s := range m.Shards {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// rangeIndex returns the index of the range holding k, or -1.
func (m *Map) rangeIndex(k Key) int {
	// Ranges are sorted: the candidate is the last range whose From <= k.
	i := sort.Search(len(m.Ranges), func(i int) bool {
		f := m.Ranges[i].From
		if f.IsZero() {
			return false
		}
		c, ok := compareKeys(f, k)
		return ok && c > 0
	})
	if i > 0 && m.Ranges[i-1].contains(k) {
		return i - 1
	}
	return -1
}

// SplitRange returns the next version of a range map in which the range
// holding at is split at at, its upper part [at, To) owned by shard. It
// changes the map only: rows of the upper part already stored stay on the
// old shard, so split ahead of the data (or move them yourself).
func (m *Map) SplitRange(at Key, shard string) (*Map, error) {
	if m.Strategy != RangeStrategy {
		return nil, fmt.Errorf("shard: SplitRange on a %s keyspace", m.Strategy)
	}
	if m.shardIndex(shard) < 0 {
		return nil, fmt.Errorf("%w: split to unknown shard %q", ErrInvalidMap, shard)
	}
	i := m.rangeIndex(at)
	if i < 0 {
		return nil, fmt.Errorf("splitting at %s: %w", at, ErrOutOfRange)
	}
	n := m.clone()
	n.Version++
	r := n.Ranges[i]
	if c, _ := compareKeys(r.From, at); !r.From.IsZero() && c == 0 {
		n.Ranges[i].Shard = shard
		return n, n.Validate()
	}
	lower, upper := r, r
	lower.To = at
	upper.From, upper.Shard = at, shard
	n.Ranges = slices.Insert(n.Ranges, i+1, upper)
	n.Ranges[i] = lower
	return n, n.Validate()
}
