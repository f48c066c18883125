package cache

import (
	"context"
	"strconv"
	"testing"
	"time"
)

const benchKeys = 10_000

func benchKeyNames() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = "bench:key:" + strconv.Itoa(i)
	}
	return keys
}

func benchCache(b *testing.B, withRedis bool) (*Cache, []string) {
	b.Helper()
	cfg := Config{Logger: quietLogger()}
	if withRedis {
		cfg.Redis = newClient(b, sharedRedis)
		cfg.Prefix = uniquePrefix(b)
	}
	c := newTestCache(b, cfg)
	keys := benchKeyNames()
	value := make([]byte, 1024)
	for _, k := range keys {
		if err := c.Set(context.Background(), k, Item{Value: value, TTL: time.Hour, Tags: []string{"bench"}}); err != nil {
			b.Fatal(err)
		}
	}
	if withRedis {
		b.Cleanup(func() { _ = c.InvalidateTags(context.Background(), "bench") })
	}
	return c, keys
}

// BenchmarkMemoryGet: a hit in the memory layer (1 KiB values, 10k keys).
func BenchmarkMemoryGet(b *testing.B) {
	c, keys := benchCache(b, false)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := c.Get(ctx, keys[i%benchKeys]); !ok {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkMemoryGetParallel: the same from every P at once.
func BenchmarkMemoryGetParallel(b *testing.B) {
	c, keys := benchCache(b, false)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := c.Get(ctx, keys[i%benchKeys]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}

// BenchmarkMemorySet: overwriting 1 KiB values in a memory-only cache.
func BenchmarkMemorySet(b *testing.B) {
	c, keys := benchCache(b, false)
	ctx := context.Background()
	value := make([]byte, 1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := c.Set(ctx, keys[i%benchKeys], Item{Value: value, TTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkTieredGetMemoryHit: Get on a Redis-backed cache whose memory
// layer holds the key (the common hit path).
func BenchmarkTieredGetMemoryHit(b *testing.B) {
	c, keys := benchCache(b, true)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := c.Get(ctx, keys[i%benchKeys]); !ok {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkTieredGetRedisHit: a memory miss answered by Redis (one pipelined
// GET+PTTL round trip on loopback), including the memory fill.
func BenchmarkTieredGetRedisHit(b *testing.B) {
	c, keys := benchCache(b, true)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := keys[i%benchKeys]
		c.mem.delete(k)
		if _, ok := c.Get(ctx, k); !ok {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkGetOrFetchMemoryHit: GetOrFetch when the memory layer hits.
func BenchmarkGetOrFetchMemoryHit(b *testing.B) {
	c, keys := benchCache(b, true)
	ctx := context.Background()
	fetch := FetcherFunc(func(ctx context.Context, key string) (Item, error) {
		b.Fatal("fetch on a hit")
		return Item{}, nil
	})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.GetOrFetch(ctx, keys[i%benchKeys], fetch); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
