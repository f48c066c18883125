package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config configures a Cache. The zero value is a memory-only cache of
// 64 MiB with a one-minute default TTL.
type Config struct {
	// Name labels this cache's metrics (label "cache"), so that several
	// caches can be registered on one registry. Default: "default".
	Name string

	// MemoryMaxBytes bounds the memory layer by the bytes of its keys, values
	// and tags plus a fixed per-entry overhead (EntryOverhead). Default:
	// 64 MiB.
	MemoryMaxBytes int64

	// Redis is the Redis layer's client. The cache uses it for values, tag
	// sets, fetch locks and the invalidation channel; it does not close it.
	// For a fast fall-back to memory when Redis is unreachable, give the
	// client short DialTimeout/ReadTimeout/WriteTimeout (about 250 ms) and
	// MaxRetries -1: only the command that meets the outage pays them, as
	// the cache then stops calling Redis until it is back.
	// Default: nil, a memory-only cache (no cross-node invalidation).
	Redis redis.UniversalClient

	// Prefix starts every Redis key and the invalidation channel of this
	// cache; caches that share a Prefix share data and invalidations.
	// Default: "scaleout:cache:".
	Prefix string

	// DefaultTTL is used when an Item's TTL is zero. Default: 1 minute.
	DefaultTTL time.Duration

	// MaxTTL caps every TTL. Default: no cap.
	MaxTTL time.Duration

	// LockTTL is how long the cross-node fetch lock of GetOrFetch is held at
	// most (it is released as soon as the fetch ends). Default: 5 s.
	LockTTL time.Duration

	// LockWait is how long GetOrFetch waits for another node's fetch of the
	// same key before fetching anyway. Default: 500 ms.
	LockWait time.Duration

	// HealthInterval is how often the invalidation subscriber checks an idle
	// Redis connection with PING; it bounds how long a silent network failure
	// goes unnoticed. Default: 1 s.
	HealthInterval time.Duration

	// StatsInterval is how often the Redis server's key count, memory and
	// evictions are read (INFO, DBSIZE) for Stats. Default: 10 s.
	StatsInterval time.Duration

	// OutageMaxStale bounds staleness while Redis is unreachable: then no
	// invalidation from other nodes can arrive, so a memory entry is served
	// for at most this long after the later of its store time and the start
	// of the outage (and never past its TTL). When Redis is back the memory
	// layer is flushed. Default: 1 s.
	OutageMaxStale time.Duration

	// Codec encodes the values of the typed helpers (GetValue,
	// GetOrFetchValue, SetValue). Default: JSON.
	Codec Codec

	// Now is the clock. Default: time.Now. Tests inject a fake one.
	Now func() time.Time

	// Logger receives outage and recovery events. Default: slog.Default().
	Logger *slog.Logger
}

// EntryOverhead is the number of bytes counted for each memory entry on top
// of its key, value and tags, an estimate of the bookkeeping it costs.
const EntryOverhead = 96

const (
	defaultName           = "default"
	defaultMemoryMaxBytes = 64 << 20
	defaultPrefix         = "scaleout:cache:"
	defaultTTL            = time.Minute
	defaultLockTTL        = 5 * time.Second
	defaultLockWait       = 500 * time.Millisecond
	defaultHealthInterval = time.Second
	defaultOutageMaxStale = time.Second
	defaultStatsInterval  = 10 * time.Second
)

// ErrInvalidConfig is returned by New for a Config it cannot use.
var ErrInvalidConfig = errors.New("cache: invalid config")

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = defaultName
	}
	if c.MemoryMaxBytes < 0 {
		return c, fmt.Errorf("%w: MemoryMaxBytes is negative (%d)", ErrInvalidConfig, c.MemoryMaxBytes)
	}
	if c.MemoryMaxBytes == 0 {
		c.MemoryMaxBytes = defaultMemoryMaxBytes
	}
	if c.Prefix == "" {
		c.Prefix = defaultPrefix
	}
	type dur struct {
		name string
		v    *time.Duration
		def  time.Duration
	}
	for _, d := range []dur{
		{"DefaultTTL", &c.DefaultTTL, defaultTTL},
		{"MaxTTL", &c.MaxTTL, 0},
		{"LockTTL", &c.LockTTL, defaultLockTTL},
		{"LockWait", &c.LockWait, defaultLockWait},
		{"HealthInterval", &c.HealthInterval, defaultHealthInterval},
		{"OutageMaxStale", &c.OutageMaxStale, defaultOutageMaxStale},
		{"StatsInterval", &c.StatsInterval, defaultStatsInterval},
	} {
		if *d.v < 0 {
			return c, fmt.Errorf("%w: %s is negative (%v)", ErrInvalidConfig, d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MaxTTL > 0 && c.DefaultTTL > c.MaxTTL {
		c.DefaultTTL = c.MaxTTL
	}
	if c.Codec == nil {
		c.Codec = JSON{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
