package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMemoryOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newFakeClock()
	c := newTestCache(t, Config{Now: clock.Now, DefaultTTL: 30 * time.Second})

	steps := []struct {
		name    string
		do      func(t *testing.T)
		key     string
		want    string // "" means a miss
		wantTTL time.Duration
	}{
		{"set then get", func(t *testing.T) {
			mustSet(t, c, "a", Item{Value: []byte("1"), TTL: 10 * time.Second})
		}, "a", "1", 10 * time.Second},
		{"remaining ttl shrinks", func(t *testing.T) { clock.Advance(4 * time.Second) }, "a", "1", 6 * time.Second},
		{"not served past ttl", func(t *testing.T) { clock.Advance(6 * time.Second) }, "a", "", 0},
		{"zero ttl means default", func(t *testing.T) {
			mustSet(t, c, "b", Item{Value: []byte("2")})
		}, "b", "2", 30 * time.Second},
		{"overwrite", func(t *testing.T) {
			mustSet(t, c, "b", Item{Value: []byte("3"), TTL: time.Minute})
		}, "b", "3", time.Minute},
		{"delete", func(t *testing.T) {
			if err := c.Delete(ctx, "b"); err != nil {
				t.Fatal(err)
			}
		}, "b", "", 0},
		{"tagged entries", func(t *testing.T) {
			mustSet(t, c, "t1", Item{Value: []byte("x"), TTL: time.Minute, Tags: []string{"red", "big"}})
			mustSet(t, c, "t2", Item{Value: []byte("y"), TTL: time.Minute, Tags: []string{"red"}})
			mustSet(t, c, "t3", Item{Value: []byte("z"), TTL: time.Minute, Tags: []string{"blue"}})
		}, "t1", "x", time.Minute},
		{"invalidate tag removes its entries", func(t *testing.T) {
			if err := c.InvalidateTags(ctx, "red"); err != nil {
				t.Fatal(err)
			}
		}, "t2", "", 0},
		{"invalidate tag removes every entry with it", func(t *testing.T) {}, "t1", "", 0},
		{"invalidate tag keeps other entries", func(t *testing.T) {}, "t3", "z", time.Minute},
		{"set copies the value", func(t *testing.T) {
			v := []byte("orig")
			mustSet(t, c, "c", Item{Value: v, TTL: time.Minute})
			copy(v, "XXXX")
		}, "c", "orig", time.Minute},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do(t)
			it, ok := c.Get(ctx, s.key)
			if s.want == "" {
				if ok {
					t.Fatalf("Get(%q) = %q, want a miss", s.key, it.Value)
				}
				return
			}
			if !ok || string(it.Value) != s.want {
				t.Fatalf("Get(%q) = %q, %v; want %q", s.key, it.Value, ok, s.want)
			}
			if it.TTL != s.wantTTL {
				t.Fatalf("Get(%q) TTL = %v, want %v", s.key, it.TTL, s.wantTTL)
			}
		})
	}
}

func mustSet(t testing.TB, c *Cache, key string, it Item) {
	t.Helper()
	if err := c.Set(context.Background(), key, it); err != nil {
		t.Fatalf("Set(%q): %v", key, err)
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCache(t, Config{})
	fetch := FetcherFunc(func(ctx context.Context, key string) (Item, error) { return Item{Value: []byte("v")}, nil })
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"empty key set", c.Set(ctx, "", Item{}), ErrInvalidKey},
		{"negative ttl", c.Set(ctx, "k", Item{TTL: -time.Second}), ErrInvalidTTL},
		{"empty key delete", c.Delete(ctx, "a", ""), ErrInvalidKey},
		{"empty key fetch", func() error { _, err := c.GetOrFetch(ctx, "", fetch); return err }(), ErrInvalidKey},
		{"negative ttl from fetcher", func() error {
			_, err := c.GetOrFetch(ctx, "neg", FetcherFunc(func(ctx context.Context, key string) (Item, error) {
				return Item{TTL: -1}, nil
			}))
			return err
		}(), ErrInvalidTTL},
		{"negative config", func() error { _, err := New(ctx, Config{LockWait: -1}); return err }(), ErrInvalidConfig},
		{"negative memory", func() error { _, err := New(ctx, Config{MemoryMaxBytes: -1}); return err }(), ErrInvalidConfig},
		{"panicking fetcher", func() error {
			_, err := c.GetOrFetch(ctx, "p", FetcherFunc(func(ctx context.Context, key string) (Item, error) { panic("boom") }))
			return err
		}(), ErrFetchPanicked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Fatalf("got %v, want %v", tt.err, tt.want)
			}
		})
	}
	t.Run("empty tag", func(t *testing.T) {
		if err := c.Set(ctx, "k", Item{Tags: []string{""}}); !errors.Is(err, ErrInvalidTag) || !strings.Contains(err.Error(), `"k"`) {
			t.Fatalf("got %v, want ErrInvalidTag naming the key", err)
		}
		if err := c.InvalidateTags(ctx, ""); !errors.Is(err, ErrInvalidTag) {
			t.Fatalf("InvalidateTags(\"\") = %v, want ErrInvalidTag", err)
		}
	})
}

func TestMemoryBoundedByBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const max = 64 << 10
	c := newTestCache(t, Config{MemoryMaxBytes: max})
	value := bytes.Repeat([]byte("v"), 1024)
	for i := range 1000 {
		mustSet(t, c, fmt.Sprintf("k%04d", i), Item{Value: value, TTL: time.Minute})
	}
	// A value bigger than the whole layer is not kept.
	mustSet(t, c, "huge", Item{Value: make([]byte, max+1), TTL: time.Minute})
	if _, ok := c.Get(ctx, "huge"); ok {
		t.Fatal("an entry larger than MemoryMaxBytes was kept")
	}
	c.mem.c.CleanUp()
	s := c.Stats().Memory
	if s.Bytes > max {
		t.Fatalf("memory layer holds %d bytes, bound is %d", s.Bytes, max)
	}
	if s.Evictions == 0 {
		t.Fatal("no evictions counted after writing 16x the bound")
	}
	if want := max / (1024 + 5 + EntryOverhead); s.Entries > int64(want) {
		t.Fatalf("memory layer holds %d entries of ~1 KiB, at most %d fit", s.Entries, want)
	}
}

// TestTieredFillsMemoryWithRemainingTTL: node B reads a value node A wrote
// to Redis, and keeps it in memory no longer than it has left in Redis.
func TestTieredFillsMemoryWithRemainingTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rc := newClient(t, sharedRedis)
	prefix := uniquePrefix(t)
	a := newTestCache(t, Config{Redis: rc, Prefix: prefix})
	clock := newFakeClock()
	b := newTestCache(t, Config{Redis: rc, Prefix: prefix, Now: clock.Now})

	mustSet(t, a, "k", Item{Value: []byte("v"), TTL: time.Hour, Tags: []string{"tag"}})
	if err := rc.PExpire(ctx, prefix+"v:k", 2*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	it, ok := b.Get(ctx, "k")
	if !ok || string(it.Value) != "v" {
		t.Fatalf("Get from redis = %q, %v", it.Value, ok)
	}
	if it.TTL > 2*time.Second || it.TTL < time.Second {
		t.Fatalf("remaining TTL = %v, want about 2s", it.TTL)
	}
	if len(it.Tags) != 1 || it.Tags[0] != "tag" {
		t.Fatalf("tags = %q, want [tag]", it.Tags)
	}
	// Now a memory hit, with the same deadline.
	redisHits := b.Stats().Redis.Hits
	it2, ok := b.Get(ctx, "k")
	if !ok || b.Stats().Redis.Hits != redisHits || b.Stats().Memory.Hits != 1 {
		t.Fatalf("second Get was not a memory hit: %+v", b.Stats())
	}
	if it2.TTL != it.TTL {
		t.Fatalf("memory TTL = %v, want %v", it2.TTL, it.TTL)
	}
	// Delete the Redis copy behind the cache's back: after the remaining
	// TTL the memory copy must be gone too.
	if err := rc.Del(ctx, prefix+"v:k").Err(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(it.TTL)
	if it, ok := b.Get(ctx, "k"); ok {
		t.Fatalf("served %q after its Redis TTL ended", it.Value)
	}
}

func TestGetOrFetchCoalescesOnNode(t *testing.T) {
	t.Parallel()
	const callers = 1000
	tests := []struct {
		name  string
		redis bool
	}{{"memory only", false}, {"with redis", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{}
			if tt.redis {
				cfg.Redis = newClient(t, sharedRedis)
				cfg.Prefix = uniquePrefix(t)
			}
			c := newTestCache(t, cfg)
			var fetches atomic.Int32
			release := make(chan struct{})
			fetch := FetcherFunc(func(ctx context.Context, key string) (Item, error) {
				fetches.Add(1)
				<-release
				return Item{Value: []byte("value of " + key), TTL: time.Minute}, nil
			})
			var wg sync.WaitGroup
			errs := make(chan error, callers)
			for range callers {
				wg.Go(func() {
					it, err := c.GetOrFetch(context.Background(), "hot", fetch)
					if err == nil && string(it.Value) != "value of hot" {
						err = fmt.Errorf("got %q", it.Value)
					}
					if err != nil {
						errs <- err
					}
				})
			}
			waitFor(t, 20*time.Second, "all callers to wait on one load", func() bool {
				return c.flight.waiting("hot") == callers
			})
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if n := fetches.Load(); n != 1 {
				t.Fatalf("%d callers caused %d fetches, want 1", callers, n)
			}
			if s := c.Stats(); s.Coalesced != callers-1 || s.Fetches != 1 {
				t.Fatalf("stats: coalesced %d fetches %d", s.Coalesced, s.Fetches)
			}
			// And it is cached now.
			if _, err := c.GetOrFetch(context.Background(), "hot", fetch); err != nil || fetches.Load() != 1 {
				t.Fatalf("second GetOrFetch fetched again (err %v)", err)
			}
		})
	}
}

func TestGetOrFetchAcrossNodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		lockWait    time.Duration
		fetchTime   time.Duration
		aFails      bool
		wantB       string // the value node B gets
		wantBFetch  int32
		wantTimeout uint64
	}{
		{"waits for the other node's value", 5 * time.Second, 100 * time.Millisecond, false, "from a", 0, 0},
		{"bounded wait then fetch anyway", 50 * time.Millisecond, time.Second, false, "from b", 1, 1},
		{"holder fails, waiter takes over", 5 * time.Second, 100 * time.Millisecond, true, "from b", 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rc := newClient(t, sharedRedis)
			prefix := uniquePrefix(t)
			a := newTestCache(t, Config{Redis: rc, Prefix: prefix, LockWait: tt.lockWait})
			b := newTestCache(t, Config{Redis: rc, Prefix: prefix, LockWait: tt.lockWait})
			started := make(chan struct{})
			var bFetches atomic.Int32
			slow := FetcherFunc(func(ctx context.Context, key string) (Item, error) {
				close(started)
				time.Sleep(tt.fetchTime)
				if tt.aFails {
					return Item{}, errors.New("origin down")
				}
				return Item{Value: []byte("from a"), TTL: time.Minute}, nil
			})
			fromB := FetcherFunc(func(ctx context.Context, key string) (Item, error) {
				bFetches.Add(1)
				return Item{Value: []byte("from b"), TTL: time.Minute}, nil
			})
			aDone := make(chan error, 1)
			go func() { _, err := a.GetOrFetch(ctx, "k", slow); aDone <- err }()
			<-started
			it, err := b.GetOrFetch(ctx, "k", fromB)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-aDone; (err != nil) != tt.aFails {
				t.Fatalf("node A: %v", err)
			}
			if n := bFetches.Load(); n != tt.wantBFetch {
				t.Fatalf("node B fetched %d times, want %d", n, tt.wantBFetch)
			}
			if string(it.Value) != tt.wantB {
				t.Fatalf("node B got %q, want %q", it.Value, tt.wantB)
			}
			if s := b.Stats(); s.LockWaits < 1 || s.LockTimeouts != tt.wantTimeout {
				t.Fatalf("node B lock waits %d timeouts %d", s.LockWaits, s.LockTimeouts)
			}
		})
	}
}

func TestGetOrFetchErrorsAndCancellation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCache(t, Config{Redis: newClient(t, sharedRedis), Prefix: uniquePrefix(t)})

	t.Run("fetch error is returned and not cached", func(t *testing.T) {
		boom := errors.New("db down")
		_, err := c.GetOrFetch(ctx, "e", FetcherFunc(func(ctx context.Context, key string) (Item, error) { return Item{}, boom }))
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want %v", err, boom)
		}
		if _, ok := c.Get(ctx, "e"); ok {
			t.Fatal("a failed fetch left a value")
		}
	})
	t.Run("caller gives up, load is cancelled", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		loadCtxDone := make(chan struct{})
		_, err := c.GetOrFetch(cctx, "slow", FetcherFunc(func(ctx context.Context, key string) (Item, error) {
			<-ctx.Done()
			close(loadCtxDone)
			return Item{}, ctx.Err()
		}))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		select {
		case <-loadCtxDone:
		case <-time.After(5 * time.Second):
			t.Fatal("the load's context was not cancelled when its only caller left")
		}
	})
}

func TestSetAndPersist(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rc := newClient(t, sharedRedis)
	prefix := uniquePrefix(t)
	c := newTestCache(t, Config{Redis: rc, Prefix: prefix})

	t.Run("persist error caches nothing", func(t *testing.T) {
		mustSet(t, c, "k", Item{Value: []byte("old"), TTL: time.Minute})
		boom := errors.New("commit timed out")
		err := c.SetAndPersist(ctx, "k", Item{Value: []byte("new")}, func(ctx context.Context) error { return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want %v", err, boom)
		}
		// Neither the new value nor the old one, which the failed write
		// may have made stale.
		if it, ok := c.Get(ctx, "k"); ok {
			t.Fatalf("after a failed persist the cache holds %q", it.Value)
		}
		if n, _ := rc.Exists(ctx, prefix+"v:k").Result(); n != 0 {
			t.Fatal("after a failed persist redis holds a value")
		}
	})
	t.Run("persist first, then cache", func(t *testing.T) {
		mustSet(t, c, "k", Item{Value: []byte("old"), TTL: time.Minute})
		var sawOld bool
		err := c.SetAndPersist(ctx, "k", Item{Value: []byte("new"), TTL: time.Minute}, func(ctx context.Context) error {
			it, _ := c.Get(ctx, "k")
			sawOld = string(it.Value) == "old"
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !sawOld {
			t.Fatal("the cache changed before persist ran")
		}
		if it, _ := c.Get(ctx, "k"); string(it.Value) != "new" {
			t.Fatalf("cache holds %q, want new", it.Value)
		}
		v, _ := rc.Get(ctx, prefix+"v:k").Bytes()
		if value, _, err := decodeRecord(v); err != nil || string(value) != "new" {
			t.Fatalf("redis holds %q (%v), want new", value, err)
		}
	})
}

// TestInvalidationAcrossNodesInProcess checks every invalidating call
// against a second cache sharing Redis (the two-process latency test is
// TestCrossNodeInvalidationLatency).
func TestInvalidationAcrossNodesInProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rc := newClient(t, sharedRedis)
	prefix := uniquePrefix(t)
	a := newTestCache(t, Config{Redis: rc, Prefix: prefix})
	b := newTestCache(t, Config{Redis: rc, Prefix: prefix})

	tests := []struct {
		name       string
		tags       []string
		invalidate func(key string) error
		wantB      string // what B reads afterwards; "" is a miss
	}{
		{"delete", nil, func(k string) error { return a.Delete(ctx, k) }, ""},
		{"set", nil, func(k string) error { return a.Set(ctx, k, Item{Value: []byte("v2")}) }, "v2"},
		{"set and persist", nil, func(k string) error {
			return a.SetAndPersist(ctx, k, Item{Value: []byte("v3")}, func(context.Context) error { return nil })
		}, "v3"},
		{"tag", []string{"group"}, func(k string) error { return a.InvalidateTags(ctx, "group") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "k-" + tt.name
			before := b.Stats().InvalidationsReceived
			mustSet(t, a, key, Item{Value: []byte("v1"), TTL: time.Minute, Tags: tt.tags})
			// A's Set invalidates the key on B too; a read that overlaps
			// it is (rightly) not kept in memory, so let it land first.
			waitFor(t, 2*time.Second, "B to hear A's set", func() bool { return b.Stats().InvalidationsReceived > before })
			if it, ok := b.Get(ctx, key); !ok || string(it.Value) != "v1" {
				t.Fatalf("B read %q, %v before invalidation", it.Value, ok)
			}
			if !b.mem.peek(key) {
				t.Fatal("B did not keep the value in memory")
			}
			if err := tt.invalidate(key); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*time.Second, "B to drop the key from memory", func() bool { return !b.mem.peek(key) })
			it, ok := b.Get(ctx, key)
			if got := string(it.Value); ok != (tt.wantB != "") || got != tt.wantB {
				t.Fatalf("B reads %q, %v after invalidation; want %q", got, ok, tt.wantB)
			}
		})
	}
	if n := b.Stats().InvalidationsReceived; n < uint64(len(tests)) {
		t.Fatalf("B applied %d invalidations, want at least %d", n, len(tests))
	}
}

func TestTypedHelpers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCache(t, Config{Redis: newClient(t, sharedRedis), Prefix: uniquePrefix(t)})
	type user struct {
		ID   int
		Name string
	}
	calls := 0
	fetch := func(ctx context.Context) (user, error) { calls++; return user{7, "ada"}, nil }
	for range 3 {
		u, err := GetOrFetchValue(ctx, c, "user:7", time.Minute, fetch, "users")
		if err != nil || u != (user{7, "ada"}) {
			t.Fatalf("GetOrFetchValue = %+v, %v", u, err)
		}
	}
	if calls != 1 {
		t.Fatalf("fetched %d times, want 1", calls)
	}
	if err := SetValue(ctx, c, "user:8", user{8, "bob"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	u, ok, err := GetValue[user](ctx, c, "user:8")
	if err != nil || !ok || u.Name != "bob" {
		t.Fatalf("GetValue = %+v, %v, %v", u, ok, err)
	}
	mustSet(t, c, "bad", Item{Value: []byte("{not json")})
	if _, _, err := GetValue[user](ctx, c, "bad"); err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Fatalf("decoding garbage: err = %v, want one naming the key", err)
	}
	if err := c.InvalidateTags(ctx, "users"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := GetValue[user](ctx, c, "user:7"); ok {
		t.Fatal("tag invalidation left user:7")
	}
}

func TestCollector(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCache(t, Config{Name: "app", Redis: newClient(t, sharedRedis), Prefix: uniquePrefix(t)})
	mustSet(t, c, "k", Item{Value: []byte("v")})
	c.Get(ctx, "k")
	c.Get(ctx, "missing")
	waitFor(t, 5*time.Second, "the redis server stats", func() bool {
		s := c.Stats().Redis
		return s.Entries > 0 && s.Bytes > 0
	})

	reg := prometheus.NewRegistry()
	if err := reg.Register(c.Collector()); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "layer" {
					name += "{" + l.GetValue() + "}"
				}
				if l.GetName() == "cache" && l.GetValue() != "app" {
					t.Fatalf("cache label = %q", l.GetValue())
				}
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[name] = v
		}
	}
	for name, want := range map[string]float64{
		"scaleout_cache_hits_total{memory}":   1,
		"scaleout_cache_misses_total{memory}": 1,
		"scaleout_cache_misses_total{redis}":  1,
		"scaleout_cache_hit_ratio{memory}":    0.5,
		"scaleout_cache_entries{memory}":      1,
		"scaleout_cache_errors_total{redis}":  0,
		"scaleout_cache_degraded":             0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	for _, name := range []string{"scaleout_cache_entries{redis}", "scaleout_cache_bytes{redis}"} {
		if got[name] <= 0 {
			t.Errorf("%s = %v, want > 0", name, got[name])
		}
	}
}

// TestInvalidationDuringLoadIsNotCached pins the race between a load and an
// invalidation of the same key: the loaded value is returned to the caller
// but not kept, so the invalidation wins.
func TestInvalidationDuringLoadIsNotCached(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rc := newClient(t, sharedRedis)
	prefix := uniquePrefix(t)
	a := newTestCache(t, Config{Redis: rc, Prefix: prefix})
	b := newTestCache(t, Config{Redis: rc, Prefix: prefix})

	tests := []struct {
		name       string
		invalidate func(key string) error
	}{
		{"local delete", func(k string) error { return a.Delete(ctx, k) }},
		{"local tag", func(k string) error { return a.InvalidateTags(ctx, "tag-"+k) }},
		{"delete from another node", func(k string) error {
			before := a.Stats().InvalidationsReceived
			if err := b.Delete(ctx, k); err != nil {
				return err
			}
			waitFor(t, 2*time.Second, "A to hear B", func() bool { return a.Stats().InvalidationsReceived > before })
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "k-" + tt.name
			started, release := make(chan struct{}), make(chan struct{})
			done := make(chan Item, 1)
			go func() {
				it, err := a.GetOrFetch(ctx, key, FetcherFunc(func(ctx context.Context, key string) (Item, error) {
					close(started)
					<-release
					return Item{Value: []byte("stale"), TTL: time.Minute, Tags: []string{"tag-" + key}}, nil
				}))
				if err != nil {
					t.Error(err)
				}
				done <- it
			}()
			<-started
			if err := tt.invalidate(key); err != nil {
				t.Fatal(err)
			}
			close(release)
			if it := <-done; string(it.Value) != "stale" {
				t.Fatalf("caller got %q, want the fetched value", it.Value)
			}
			if a.mem.peek(key) {
				t.Fatal("a value loaded across an invalidation was kept in memory")
			}
			if n, _ := rc.Exists(ctx, prefix+"v:"+key).Result(); n != 0 {
				t.Fatal("a value loaded across an invalidation was written to redis")
			}
		})
	}

	t.Run("redis fill overlapping an invalidation", func(t *testing.T) {
		snap := a.snapshot("r")
		a.apply(string(encodeMessage(message{kind: msgKeys, node: "other", names: []string{"r"}})))
		a.fillMemory("r", []byte("old"), nil, time.Minute, snap)
		if a.mem.peek("r") {
			t.Fatal("a Redis read that overlapped an invalidation was kept in memory")
		}
	})
}

// TestTagIndexFollowsEntries: the memory layer's tag index forgets entries
// that are replaced, deleted, flushed or evicted, so it cannot grow without
// bound.
func TestTagIndexFollowsEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCache(t, Config{MemoryMaxBytes: 16 << 10})
	indexed := func() int {
		c.mem.tagsMu.Lock()
		defer c.mem.tagsMu.Unlock()
		n := 0
		for _, keys := range c.mem.tags {
			n += len(keys)
		}
		return n
	}
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"set", func() {
			mustSet(t, c, "a", Item{Value: []byte("1"), Tags: []string{"x", "y"}})
			mustSet(t, c, "b", Item{Value: []byte("2"), Tags: []string{"x"}})
		}, 3},
		{"replace with other tags", func() { mustSet(t, c, "a", Item{Value: []byte("1"), Tags: []string{"z"}}) }, 2},
		{"replace without tags", func() { mustSet(t, c, "a", Item{Value: []byte("1")}) }, 1},
		{"delete", func() { _ = c.Delete(ctx, "b") }, 0},
		{"flush", func() {
			mustSet(t, c, "c", Item{Value: []byte("3"), Tags: []string{"x"}})
			c.mem.flush()
		}, 0},
		{"evict", func() {
			for i := range 500 {
				mustSet(t, c, fmt.Sprintf("e%d", i), Item{Value: make([]byte, 512), Tags: []string{"e"}})
			}
			c.mem.c.CleanUp()
		}, -1},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			got := indexed()
			if s.want >= 0 && got != s.want {
				t.Fatalf("tag index holds %d entries, want %d", got, s.want)
			}
			if s.want < 0 && int64(got) != c.Stats().Memory.Entries {
				t.Fatalf("tag index holds %d entries, memory holds %d", got, c.Stats().Memory.Entries)
			}
		})
	}
}

func TestTTLRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rc := newClient(t, sharedRedis)
	prefix := uniquePrefix(t)
	c := newTestCache(t, Config{Redis: rc, Prefix: prefix, DefaultTTL: time.Hour, MaxTTL: 10 * time.Second})
	tests := []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"zero means default, capped by MaxTTL", 0, 10 * time.Second},
		{"longer than MaxTTL is capped", time.Hour, 10 * time.Second},
		{"shorter is kept", 3 * time.Second, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "k-" + tt.name
			mustSet(t, c, key, Item{Value: []byte("v"), TTL: tt.ttl})
			it, ok := c.Get(ctx, key)
			if !ok || it.TTL > tt.want || it.TTL < tt.want-time.Second {
				t.Fatalf("memory TTL = %v (hit %v), want about %v", it.TTL, ok, tt.want)
			}
			pttl, err := rc.PTTL(ctx, prefix+"v:"+key).Result()
			if err != nil || pttl > tt.want || pttl < tt.want-time.Second {
				t.Fatalf("redis TTL = %v (%v), want about %v", pttl, err, tt.want)
			}
		})
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCache(t, Config{Redis: newClient(t, sharedRedis), Prefix: uniquePrefix(t)})
	started := make(chan struct{})
	loadErr := make(chan error, 1)
	go func() {
		_, err := c.GetOrFetch(ctx, "slow", FetcherFunc(func(ctx context.Context, key string) (Item, error) {
			close(started)
			<-ctx.Done() // Close cancels the load
			return Item{}, ctx.Err()
		}))
		loadErr <- err
	}()
	<-started
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-loadErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("running load ended with %v, want context.Canceled", err)
	}
	if _, err := c.GetOrFetch(ctx, "k", FetcherFunc(func(ctx context.Context, key string) (Item, error) {
		return Item{Value: []byte("v")}, nil
	})); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetOrFetch after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
