package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/scaleout/scaleout/internal/testenv"
)

// testPrefix returns a key prefix of its own for a test on the shared Redis
// at 127.0.0.1:6379, whose keys are deleted when the test ends.
func testPrefix(t testing.TB) string {
	prefix := fmt.Sprintf("scaleout:rt:test:%d:%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	return prefix
}

// Nodes as separate processes sharing the Redis at 127.0.0.1:6379.
func TestClusterRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	prefix := testPrefix(t)
	env := []string{"RT_PREFIX=" + prefix, "RT_PRESENCE_TTL=2s"}
	a := startProcNode(t, append(env, "RT_NODE=a")...)
	b := startProcNode(t, append(env, "RT_NODE=b")...)

	t.Run("user on node B receives every message published on node A once (p99 target 50ms)", func(t *testing.T) {
		c := dial(t, b.url, token(t, "bob", false, "lat"))
		subscribe(t, c, "lat", nil)
		const count = 200
		sent := make([]time.Time, count)
		got := make(chan [2]int64, count)
		go func() {
			for range count {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				f, err := c.Next(ctx)
				cancel()
				if err != nil {
					close(got)
					return
				}
				var m struct{ I int }
				_ = json.Unmarshal(f.Data, &m)
				got <- [2]int64{int64(m.I), time.Now().UnixNano()}
			}
		}()
		for i := range count {
			sent[i] = time.Now()
			if code, body := postPublish(t, a.admin, fmt.Sprintf(`{"channel":"lat","data":{"i":%d}}`, i)); code != 200 {
				t.Fatalf("publish: %d %s", code, body)
			}
			time.Sleep(2 * time.Millisecond)
		}
		lat := make([]time.Duration, 0, count)
		seen := map[int64]bool{}
		for range count {
			r, ok := <-got
			if !ok {
				t.Fatalf("received %d of %d messages", len(lat), count)
			}
			if seen[r[0]] {
				t.Fatalf("message %d received twice", r[0])
			}
			seen[r[0]] = true
			lat = append(lat, time.Duration(r[1]-sent[r[0]].UnixNano()))
		}
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		t.Logf("cross-node delivery over %d messages: p50 %v p99 %v max %v", count, p50, p99, lat[len(lat)-1])
		// The target is 50ms p99 on an idle loopback. A shared CI machine
		// under -race is no place to assert speed, so the bound is checked
		// only when asked for (REALTIME_LATENCY_STRICT=1).
		if p99 > 50*time.Millisecond && os.Getenv("REALTIME_LATENCY_STRICT") != "" {
			t.Errorf("p99 %v exceeds 50ms", p99)
		}
	})

	t.Run("user with connections on two nodes gets a message on both, once each", func(t *testing.T) {
		ca := dial(t, a.url, token(t, "alice", false))
		cb := dial(t, b.url, token(t, "alice", false))
		// A connection is registered once the hub answered anything on it.
		for _, c := range []*Client{ca, cb} {
			if _, err := c.Presence(context.Background(), "x"); err == nil {
				t.Fatal("presence of a forbidden channel allowed")
			}
		}
		if code, body := postPublish(t, b.admin, `{"user":"alice","data":{"dm":"hi"}}`); code != 200 {
			t.Fatalf("publish: %d %s", code, body)
		}
		for name, c := range map[string]*Client{"node A": ca, "node B": cb} {
			f := next(t, c)
			if f.User != "alice" || string(f.Data) != `{"dm":"hi"}` {
				t.Fatalf("%s got %+v", name, f)
			}
			expectNone(t, c, 100*time.Millisecond)
		}
	})

	t.Run("presence spans nodes and a killed node's users vanish within the TTL", func(t *testing.T) {
		c := startProcNode(t, append(env, "RT_NODE=c")...)
		watcher := dial(t, a.url, token(t, "watcher", false, "room"))
		u1 := dial(t, a.url, token(t, "u1", false, "room"))
		subscribe(t, u1, "room", nil)
		for _, u := range []string{"u2", "u3", "u3"} {
			subscribe(t, dial(t, c.url, token(t, u, false, "room")), "room", nil)
		}
		p, err := watcher.Presence(context.Background(), "room")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{"u1": 1, "u2": 1, "u3": 2}
		if p.Connections != 4 || fmt.Sprint(p.Users) != fmt.Sprint(want) {
			t.Fatalf("presence %+v, want users %v", p, want)
		}
		c.kill()
		killed := time.Now()
		for {
			p, err := watcher.Presence(context.Background(), "room")
			if err != nil {
				t.Fatal(err)
			}
			if p.Connections == 1 && p.Users["u1"] == 1 {
				t.Logf("killed node's users gone after %v (TTL 2s)", time.Since(killed))
				break
			}
			// Entries expire 2s after the last heartbeat; allow for a loaded
			// machine in reading them.
			if time.Since(killed) > 4*time.Second {
				t.Fatalf("presence %+v 4s after the kill, TTL 2s", p)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("reconnect to the other node with the last sequence number recovers the missed messages", func(t *testing.T) {
		tok := token(t, "carol", false, "feed")
		c1 := dial(t, a.url, tok)
		subscribe(t, c1, "feed", nil)
		postPublish(t, a.admin, `{"channel":"feed","data":1}`)
		f := next(t, c1)
		last := Position{Epoch: f.Epoch, Seq: f.Seq}
		_ = c1.Close()
		for i := 2; i <= 6; i++ {
			postPublish(t, a.admin, fmt.Sprintf(`{"channel":"feed","data":%d}`, i))
		}
		c2 := dial(t, b.url, tok)
		r := subscribe(t, c2, "feed", &last)
		if r.Recovered == nil || !*r.Recovered {
			t.Fatalf("reply %+v", r)
		}
		for i := 2; i <= 6; i++ {
			if f := next(t, c2); string(f.Data) != fmt.Sprint(i) || f.Seq != last.Seq+uint64(i-1) {
				t.Fatalf("recovered %+v, want data %d", f, i)
			}
		}
		expectNone(t, c2, 100*time.Millisecond)
	})
}

// Nodes as processes on a Redis of their own, restarted in the middle.
func TestClusterRedisRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	rs := testenv.StartRedis(t)
	env := []string{"RT_PREFIX=" + testPrefix(t), "RT_REDIS=" + rs.Addr()}
	a := startProcNode(t, append(env, "RT_NODE=a")...)
	b := startProcNode(t, append(env, "RT_NODE=b")...)
	ca := dial(t, a.url, token(t, "u", false, "r"))
	cb := dial(t, b.url, token(t, "u", false, "r"))
	subscribe(t, ca, "r", nil)
	subscribe(t, cb, "r", nil)
	postPublish(t, a.admin, `{"channel":"r","data":"before"}`)
	for _, c := range []*Client{ca, cb} {
		if f := next(t, c); string(f.Data) != `"before"` {
			t.Fatalf("got %+v", f)
		}
	}

	rs.Stop()
	code, body := postPublish(t, a.admin, `{"channel":"r","data":"during"}`)
	if code != 503 || !strings.Contains(body, `"delivered":"local"`) {
		t.Fatalf("publish during outage: %d %s", code, body)
	}
	if f := next(t, ca); string(f.Data) != `"during"` {
		t.Fatalf("local delivery during outage: %+v", f)
	}
	rs.Start()

	// Delivery resumes once the nodes resubscribe; node B never got
	// "during", and Redis lost the history, so B's client is told to
	// resync rather than silently missing it.
	deadline := time.Now().Add(10 * time.Second)
	var resynced bool
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("delivery did not resume within 10s of the Redis restart")
		}
		code, _ := postPublish(t, a.admin, fmt.Sprintf(`{"channel":"r","data":"after-%d"}`, i))
		if code != 200 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		var gotAfter bool
		for {
			f, err := cb.Next(ctx)
			if err != nil {
				break
			}
			if f.Type == TypeResync {
				resynced = true
				continue
			}
			if strings.HasPrefix(string(f.Data), `"after-`) {
				gotAfter = true
				break
			}
		}
		cancel()
		if gotAfter {
			break
		}
	}
	if !resynced {
		t.Fatal("node B's client missed a message during the outage and was not told to resync")
	}
}

// A node whose Redis pub/sub connection drops recovers what was published
// meanwhile from the history in Redis.
func TestRedisPubSubReconnectRecoversGap(t *testing.T) {
	rs := testenv.StartRedis(t)
	prefix := testPrefix(t)
	newRDB := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: rs.Addr()})
		t.Cleanup(func() { c.Close() })
		return c
	}
	rdbA, rdbB := newRDB(), newRDB()
	a := startNode(t, Config{Broker: NewRedisBroker(rdbA, RedisBrokerConfig{Prefix: prefix}), NodeID: "a"})
	b := startNode(t, Config{Broker: NewRedisBroker(rdbB, RedisBrokerConfig{Prefix: prefix}), NodeID: "b"})
	cb := dial(t, b.url, token(t, "u", false, "g"))
	subscribe(t, cb, "g", nil)
	publish(t, a.hub, "g", "1")
	next(t, cb)

	// Kill node B's subscription connection, and publish while it is away.
	ctx := context.Background()
	if err := rdbA.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 4; i++ {
		publish(t, a.hub, "g", fmt.Sprint(i))
	}
	for i := 2; i <= 4; i++ {
		if f := next(t, cb); f.Seq != uint64(i) || string(f.Data) != fmt.Sprint(i) {
			t.Fatalf("got %+v, want seq %d", f, i)
		}
	}
	if st := b.hub.Status(); st.LostGaps != 0 {
		t.Fatalf("status %+v", st)
	}
}
