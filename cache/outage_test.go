package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/scaleout/scaleout/internal/testenv"
)

// TestRedisOutage stops the cache's own redis-server, keeps working on
// memory and the fetcher, then restarts it on the same port and checks the
// cache recovers by itself.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	rc := newClient(t, srv.Addr())
	c := newTestCache(t, Config{
		Redis:          rc,
		Prefix:         uniquePrefix(t),
		OutageMaxStale: time.Second,
		HealthInterval: 200 * time.Millisecond,
	})
	var fetches atomic.Int32
	fetch := FetcherFunc(func(ctx context.Context, key string) (Item, error) {
		fetches.Add(1)
		return Item{Value: []byte("fetched " + key), TTL: time.Minute}, nil
	})
	mustSet(t, c, "before", Item{Value: []byte("b"), TTL: time.Minute})

	srv.Stop()
	waitFor(t, 5*time.Second, "the cache to notice the outage", func() bool { return c.Stats().Degraded })
	outageAt := time.Now()

	t.Run("reads and writes keep working", func(t *testing.T) {
		if it, ok := c.Get(ctx, "before"); !ok || string(it.Value) != "b" {
			t.Fatalf("Get(before) = %q, %v during the outage", it.Value, ok)
		}
		for range 2 {
			it, err := c.GetOrFetch(ctx, "f", fetch)
			if err != nil || string(it.Value) != "fetched f" {
				t.Fatalf("GetOrFetch = %q, %v during the outage", it.Value, err)
			}
		}
		if n := fetches.Load(); n != 1 {
			t.Fatalf("%d fetches for two GetOrFetch calls, want 1 (the second from memory)", n)
		}
		if err := c.Set(ctx, "w", Item{Value: []byte("w"), TTL: time.Minute}); err != nil {
			t.Fatalf("Set returned %v during the outage", err)
		}
		if it, ok := c.Get(ctx, "w"); !ok || string(it.Value) != "w" {
			t.Fatalf("Get(w) = %q, %v", it.Value, ok)
		}
		if err := c.SetAndPersist(ctx, "p", Item{Value: []byte("p")}, func(context.Context) error { return nil }); err != nil {
			t.Fatalf("SetAndPersist returned %v during the outage", err)
		}
		if err := c.Delete(ctx, "w"); err != nil {
			t.Fatalf("Delete returned %v during the outage", err)
		}
		if _, ok := c.Get(ctx, "w"); ok {
			t.Fatal("Get(w) hit after Delete")
		}
		if err := c.InvalidateTags(ctx, "x"); err != nil {
			t.Fatalf("InvalidateTags returned %v during the outage", err)
		}
	})
	t.Run("nothing served past its ttl", func(t *testing.T) {
		mustSet(t, c, "short", Item{Value: []byte("s"), TTL: 100 * time.Millisecond})
		time.Sleep(150 * time.Millisecond)
		if _, ok := c.Get(ctx, "short"); ok {
			t.Fatal("served an entry past its TTL during the outage")
		}
	})
	t.Run("staleness bounded by OutageMaxStale", func(t *testing.T) {
		time.Sleep(time.Until(outageAt.Add(1100 * time.Millisecond)))
		if _, ok := c.Get(ctx, "before"); ok {
			t.Fatal("served an entry stored before the outage for longer than OutageMaxStale")
		}
	})
	t.Run("errors counted not returned", func(t *testing.T) {
		s := c.Stats()
		if s.Redis.Errors == 0 || s.Outages == 0 || !s.Degraded {
			t.Fatalf("stats during outage: %+v", s)
		}
	})

	srv.Start()
	waitFor(t, 10*time.Second, "the cache to recover", func() bool { return !c.Stats().Degraded })
	t.Run("recovered", func(t *testing.T) {
		if s := c.Stats(); s.Recoveries == 0 {
			t.Fatalf("no recovery counted: %+v", s)
		}
		mustSet(t, c, "after", Item{Value: []byte("a"), TTL: time.Minute})
		if n, err := rc.Exists(ctx, c.cfg.Prefix+"v:after").Result(); err != nil || n != 1 {
			t.Fatalf("value written after recovery is not in redis (%d, %v)", n, err)
		}
		if _, err := c.GetOrFetch(ctx, "g", fetch); err != nil {
			t.Fatal(err)
		}
		if n, err := rc.Exists(ctx, c.cfg.Prefix+"v:g").Result(); err != nil || n != 1 {
			t.Fatalf("value fetched after recovery is not in redis (%d, %v)", n, err)
		}
	})
}

// TestStartsWithRedisDown: New succeeds without Redis and connects later.
func TestStartsWithRedisDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	srv.Stop()
	rc := newClient(t, srv.Addr())
	c := newTestCache(t, Config{Redis: rc, Prefix: uniquePrefix(t), HealthInterval: 100 * time.Millisecond})
	if !c.Stats().Degraded {
		t.Fatal("cache without redis does not report Degraded")
	}
	it, err := c.GetOrFetch(ctx, "k", FetcherFunc(func(ctx context.Context, key string) (Item, error) {
		return Item{Value: []byte("v")}, nil
	}))
	if err != nil || string(it.Value) != "v" {
		t.Fatalf("GetOrFetch = %q, %v", it.Value, err)
	}
	srv.Start()
	waitFor(t, 10*time.Second, "the cache to connect", func() bool { return !c.Stats().Degraded })
	mustSet(t, c, "k2", Item{Value: []byte("v2")})
	if n, err := rc.Exists(ctx, c.cfg.Prefix+"v:k2").Result(); err != nil || n != 1 {
		t.Fatalf("value not in redis after connecting (%d, %v)", n, err)
	}
}

// TestPartitionReplaysWrites cuts one node off a Redis that keeps its data:
// what that node deleted, wrote or invalidated meanwhile is deleted from
// Redis and announced to the other nodes when it reconnects.
func TestPartitionReplaysWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := uniquePrefix(t)
	direct := newClient(t, sharedRedis)
	proxy := newTCPProxy(t, sharedRedis)
	a := newTestCache(t, Config{Redis: newClient(t, proxy.Addr()), Prefix: prefix, HealthInterval: 100 * time.Millisecond})
	b := newTestCache(t, Config{Redis: direct, Prefix: prefix})

	for _, k := range []string{"deleted", "rewritten", "tagged"} {
		before := b.Stats().InvalidationsReceived
		mustSet(t, a, k, Item{Value: []byte("v1"), TTL: time.Minute, Tags: []string{"tag-" + k}})
		waitFor(t, 2*time.Second, "B to hear A's set", func() bool { return b.Stats().InvalidationsReceived > before })
		if _, ok := b.Get(ctx, k); !ok || !b.mem.peek(k) {
			t.Fatalf("B did not fill %s", k)
		}
	}

	proxy.Cut()
	waitFor(t, 5*time.Second, "A to notice the partition", func() bool { return a.Stats().Degraded })
	if err := a.Delete(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	mustSet(t, a, "rewritten", Item{Value: []byte("v2"), TTL: time.Minute})
	if err := a.InvalidateTags(ctx, "tag-tagged"); err != nil {
		t.Fatal(err)
	}
	// Redis and B still have the old values: nobody could tell them.
	if n, _ := direct.Exists(ctx, prefix+"v:deleted", prefix+"v:rewritten", prefix+"v:tagged").Result(); n != 3 {
		t.Fatalf("%d of 3 keys in redis during the partition", n)
	}

	proxy.Restore()
	waitFor(t, 10*time.Second, "A to recover", func() bool { return !a.Stats().Degraded })
	if n, err := direct.Exists(ctx, prefix+"v:deleted", prefix+"v:rewritten", prefix+"v:tagged").Result(); err != nil || n != 0 {
		t.Fatalf("%d keys written during the partition still in redis after recovery (%v)", n, err)
	}
	for _, k := range []string{"deleted", "rewritten", "tagged"} {
		waitFor(t, 2*time.Second, "B to drop "+k, func() bool { return !b.mem.peek(k) })
	}
	if it, ok := b.Get(ctx, "rewritten"); ok {
		t.Fatalf("B reads %q for a key rewritten during the partition", it.Value)
	}
}

// failingHook makes the client's commands (not its pub/sub connection) fail
// while on is set, like a flaky network between the app and Redis.
type failingHook struct{ on atomic.Bool }

var errInjected = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("injected failure")}

func (h *failingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.on.Load() {
			cmd.SetErr(errInjected)
			return errInjected
		}
		return next(ctx, cmd)
	}
}

func (h *failingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.on.Load() {
			for _, cmd := range cmds {
				cmd.SetErr(errInjected)
			}
			return errInjected
		}
		return next(ctx, cmds)
	}
}

// TestCommandFailuresKeepMemory: when commands fail but the subscription
// stays up, no invalidation was missed, so the recovery replays the writes
// without flushing the memory layer.
func TestCommandFailuresKeepMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := uniquePrefix(t)
	hook := &failingHook{}
	rc := newClient(t, sharedRedis)
	rc.AddHook(hook)
	c := newTestCache(t, Config{Redis: rc, Prefix: prefix, HealthInterval: 100 * time.Millisecond})
	direct := newClient(t, sharedRedis)

	mustSet(t, c, "kept", Item{Value: []byte("v"), TTL: time.Minute})
	mustSet(t, c, "rewritten", Item{Value: []byte("v1"), TTL: time.Minute})
	hook.on.Store(true)
	mustSet(t, c, "rewritten", Item{Value: []byte("v2"), TTL: time.Minute})
	if s := c.Stats(); !s.Degraded {
		t.Fatal("a failed write did not start an outage")
	}
	if it, ok := c.Get(ctx, "kept"); !ok || string(it.Value) != "v" {
		t.Fatalf("Get(kept) = %q, %v during the outage", it.Value, ok)
	}
	// Several health checks pass and recovery attempts fail meanwhile.
	time.Sleep(300 * time.Millisecond)
	if !c.Stats().Degraded {
		t.Fatal("recovered while commands still fail")
	}
	hook.on.Store(false)
	waitFor(t, 5*time.Second, "the recovery", func() bool { return !c.Stats().Degraded })
	if !c.mem.peek("kept") {
		t.Fatal("recovery flushed the memory layer though the subscription never broke")
	}
	if n, _ := direct.Exists(ctx, prefix+"v:rewritten").Result(); n != 0 {
		t.Fatal("the value overwritten during the outage is still in redis")
	}
}

// TestCorruptRecord: a value in Redis that the cache cannot decode reads as
// a miss, is counted, does not start an outage, and is replaced by a fill.
func TestCorruptRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := uniquePrefix(t)
	rc := newClient(t, sharedRedis)
	c := newTestCache(t, Config{Redis: rc, Prefix: prefix})
	if err := rc.Set(ctx, prefix+"v:bad", "garbage", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if it, ok := c.Get(ctx, "bad"); ok {
		t.Fatalf("Get of a corrupt record = %q", it.Value)
	}
	if s := c.Stats(); s.Degraded || s.Redis.Errors == 0 {
		t.Fatalf("after a corrupt record: degraded %v, redis errors %d", s.Degraded, s.Redis.Errors)
	}
	it, err := c.GetOrFetch(ctx, "bad", FetcherFunc(func(ctx context.Context, key string) (Item, error) {
		return Item{Value: []byte("good")}, nil
	}))
	if err != nil || string(it.Value) != "good" {
		t.Fatalf("GetOrFetch = %q, %v", it.Value, err)
	}
	b, _ := rc.Get(ctx, prefix+"v:bad").Bytes()
	if v, _, err := decodeRecord(b); err != nil || string(v) != "good" {
		t.Fatalf("redis holds %q (%v) after the fill", b, err)
	}
}

// TestPartitionOverflowDeletesPrefix: when a cut-off node wrote more keys
// than it can remember, its recovery deletes everything under the prefix
// and tells the other nodes to flush their memory.
func TestPartitionOverflowDeletesPrefix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := uniquePrefix(t)
	direct := newClient(t, sharedRedis)
	proxy := newTCPProxy(t, sharedRedis)
	a := newTestCache(t, Config{Redis: newClient(t, proxy.Addr()), Prefix: prefix, HealthInterval: 100 * time.Millisecond})
	a.maxDirty = 3
	b := newTestCache(t, Config{Redis: direct, Prefix: prefix})
	other := newClient(t, sharedRedis)
	if err := other.Set(ctx, "unrelated:"+prefix, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	mustSet(t, b, "b-key", Item{Value: []byte("v"), TTL: time.Minute})
	proxy.Cut()
	waitFor(t, 5*time.Second, "A to notice the partition", func() bool { return a.Stats().Degraded })
	for i := range 5 {
		mustSet(t, a, fmt.Sprintf("a-%d", i), Item{Value: []byte("v"), TTL: time.Minute})
	}
	proxy.Restore()
	waitFor(t, 10*time.Second, "A to recover", func() bool { return !a.Stats().Degraded })
	keys, err := direct.Keys(ctx, prefix+"*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys under the prefix after an overflowed recovery: %q (%v)", keys, err)
	}
	if n, _ := other.Exists(ctx, "unrelated:"+prefix).Result(); n != 1 {
		t.Fatal("recovery deleted a key outside its prefix")
	}
	waitFor(t, 2*time.Second, "B to flush its memory", func() bool { return !b.mem.peek("b-key") })
}
