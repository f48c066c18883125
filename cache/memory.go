package cache

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// memEntry is one value of the memory layer. It is immutable once stored.
type memEntry struct {
	value     []byte
	tags      []string
	expiresAt int64 // unix nanoseconds, by the cache's clock
	storedAt  int64 // unix nanoseconds, by the cache's clock
}

// memory is the in-process layer: a W-TinyLFU cache (otter) bounded by bytes,
// with per-entry expiry and an index from tag to the entries that carry it.
type memory struct {
	c        *otter.Cache[string, *memEntry]
	maxBytes int64
	now      func() int64 // unix nanoseconds

	tagsMu sync.Mutex
	tags   map[string]map[string]*memEntry // tag -> key -> entry

	hits, misses, evictions, expirations atomic.Uint64
}

// otterClock adapts an injected clock to otter; it has no ticks, so expired
// entries are dropped on access and on writes instead of by a timer.
type otterClock struct{ now func() int64 }

func (c otterClock) NowNano() int64                      { return c.now() }
func (c otterClock) Tick(time.Duration) <-chan time.Time { return nil }

func newMemory(maxBytes int64, now func() int64, fakeClock bool) (*memory, error) {
	m := &memory{maxBytes: maxBytes, now: now, tags: make(map[string]map[string]*memEntry)}
	opts := &otter.Options[string, *memEntry]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(key string, e *memEntry) uint32 {
			return uint32(min(entryWeight(key, e), math.MaxUint32))
		},
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, *memEntry]) time.Duration {
			return time.Duration(e.Value.expiresAt - now())
		}),
		OnAtomicDeletion: m.onDeletion,
	}
	if fakeClock {
		opts.Clock = otterClock{now: now}
	}
	c, err := otter.New(opts)
	if err != nil {
		return nil, fmt.Errorf("cache: building memory layer: %w", err)
	}
	m.c = c
	return m, nil
}

func entryWeight(key string, e *memEntry) int64 {
	w := int64(len(key)+len(e.value)) + EntryOverhead
	for _, t := range e.tags {
		w += int64(len(t)) + 16
	}
	return w
}

// onDeletion runs under otter's bucket lock: it must not call into otter.
func (m *memory) onDeletion(ev otter.DeletionEvent[string, *memEntry]) {
	switch ev.Cause {
	case otter.CauseOverflow:
		m.evictions.Add(1)
	case otter.CauseExpiration:
		m.expirations.Add(1)
	}
	if len(ev.Value.tags) == 0 {
		return
	}
	m.tagsMu.Lock()
	for _, t := range ev.Value.tags {
		if keys := m.tags[t]; keys != nil && keys[ev.Key] == ev.Value {
			delete(keys, ev.Key)
			if len(keys) == 0 {
				delete(m.tags, t)
			}
		}
	}
	m.tagsMu.Unlock()
}

// get returns the live entry for key and the time of the lookup (unix ns,
// read once, by otter, for both its expiry check and ours). An entry is live
// until its expiry; if outageStart is not zero, also only until maxStale
// after the later of its store time and outageStart.
func (m *memory) get(key string, outageStart int64, maxStale time.Duration) (*memEntry, int64, bool) {
	oe, ok := m.c.GetEntry(key)
	if ok {
		e, now := oe.Value, oe.SnapshotAtNano
		if e.expiresAt > now && (outageStart == 0 || now-max(e.storedAt, outageStart) <= int64(maxStale)) {
			m.hits.Add(1)
			return e, now, true
		}
	}
	m.misses.Add(1)
	return nil, 0, false
}

// peek reports whether key has an unexpired entry, without counting.
func (m *memory) peek(key string) bool {
	e, ok := m.c.GetEntryQuietly(key)
	return ok && e.Value.expiresAt > m.now()
}

// set stores e under key, unless it is larger than the whole layer.
func (m *memory) set(key string, e *memEntry) bool {
	if entryWeight(key, e) > m.maxBytes {
		return false
	}
	// Index the tags before the entry exists, so that the deletion handler
	// of this entry always runs after it was indexed.
	if len(e.tags) > 0 {
		m.tagsMu.Lock()
		for _, t := range e.tags {
			keys := m.tags[t]
			if keys == nil {
				keys = make(map[string]*memEntry)
				m.tags[t] = keys
			}
			keys[key] = e
		}
		m.tagsMu.Unlock()
	}
	m.c.Set(key, e)
	return true
}

func (m *memory) delete(key string) { m.c.Invalidate(key) }

// deleteIf removes key only if it still holds e.
func (m *memory) deleteIf(key string, e *memEntry) {
	m.c.ComputeIfPresent(key, func(old *memEntry) (*memEntry, otter.ComputeOp) {
		if old == e {
			return nil, otter.InvalidateOp
		}
		return old, otter.CancelOp
	})
}

// invalidateTags removes every entry carrying one of tags.
func (m *memory) invalidateTags(tags []string) {
	type victim struct {
		key string
		e   *memEntry
	}
	var victims []victim
	m.tagsMu.Lock()
	for _, t := range tags {
		for k, e := range m.tags[t] {
			victims = append(victims, victim{k, e})
		}
	}
	m.tagsMu.Unlock()
	for _, v := range victims {
		m.deleteIf(v.key, v.e)
	}
}

// flush removes every entry.
func (m *memory) flush() { m.c.InvalidateAll() }

func (m *memory) close() { m.c.StopAllGoroutines() }

func (m *memory) stats() LayerStats {
	return LayerStats{
		Hits:        m.hits.Load(),
		Misses:      m.misses.Load(),
		Evictions:   m.evictions.Load(),
		Expirations: m.expirations.Load(),
		Entries:     int64(m.c.EstimatedSize()),
		Bytes:       int64(m.c.WeightedSize()),
	}
}
