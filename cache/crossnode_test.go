package cache

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/scaleout/scaleout/internal/testenv"
)

// Env vars that turn the test binary into a second cache node (see
// runNode), so that cross-node behaviour is tested between two processes.
const (
	envNode   = "SCALEOUT_CACHE_TEST_NODE"
	envRedis  = "SCALEOUT_CACHE_TEST_REDIS"
	envPrefix = "SCALEOUT_CACHE_TEST_PREFIX"
)

func TestMain(m *testing.M) {
	if os.Getenv(envNode) != "" {
		os.Exit(runNode(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// runNode is the second node: it builds a cache on the given Redis and
// prefix, prints "ready", then answers line commands:
//
//	fill KEY N once N invalidations from other nodes have arrived, Get KEY
//	           (from Redis into memory); answers "filled" or "missing"
//	watch KEY  answers "watching", then "gone UNIXNANO" when KEY leaves the
//	           memory layer, or "timeout" after 5 s
//	get KEY    answers "hit" or "miss" (Get, so memory then Redis)
//	stats      answers "stats DEGRADED RECOVERIES RECEIVED" (DEGRADED is 0
//	           or 1, RECEIVED counts invalidations from other nodes)
//	quit       exits
func runNode(in io.Reader, out io.Writer) int {
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{
		Addr:        os.Getenv(envRedis),
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: -1,
	})
	defer rc.Close()
	nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, err := New(nctx, Config{Redis: rc, Prefix: os.Getenv(envPrefix), Logger: quietLogger()})
	cancel()
	if err != nil {
		fmt.Fprintln(out, "error", err)
		return 1
	}
	defer c.Close()
	if c.Stats().Degraded {
		fmt.Fprintln(out, "error: not subscribed")
		return 1
	}
	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, key, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "fill":
			key, n, _ := strings.Cut(key, " ")
			want, _ := strconv.ParseUint(n, 10, 64)
			deadline := time.Now().Add(5 * time.Second)
			for c.Stats().InvalidationsReceived < want && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
			}
			if _, ok := c.Get(ctx, key); ok && c.mem.peek(key) {
				fmt.Fprintln(out, "filled")
			} else {
				fmt.Fprintln(out, "missing")
			}
		case "watch":
			fmt.Fprintln(out, "watching")
			deadline := time.Now().Add(5 * time.Second)
			for c.mem.peek(key) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Microsecond)
			}
			if c.mem.peek(key) {
				fmt.Fprintln(out, "timeout")
			} else {
				fmt.Fprintln(out, "gone", time.Now().UnixNano())
			}
		case "get":
			if _, ok := c.Get(ctx, key); ok {
				fmt.Fprintln(out, "hit")
			} else {
				fmt.Fprintln(out, "miss")
			}
		case "stats":
			s := c.Stats()
			degraded := 0
			if s.Degraded {
				degraded = 1
			}
			fmt.Fprintln(out, "stats", degraded, s.Recoveries, s.InvalidationsReceived)
		case "quit":
			return 0
		default:
			fmt.Fprintln(out, "error: unknown command", cmd)
		}
	}
	return 0
}

// node is the parent's handle on a runNode process.
type node struct {
	t   *testing.T
	in  io.WriteCloser
	out *bufio.Scanner
}

func startNode(t *testing.T, redisAddr, prefix string) *node {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envNode+"=1", envRedis+"="+redisAddr, envPrefix+"="+prefix)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node process: %v", err)
	}
	t.Cleanup(func() {
		_ = in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	n := &node{t: t, in: in, out: bufio.NewScanner(out)}
	n.expect("ready")
	return n
}

func (n *node) send(line string) {
	n.t.Helper()
	if _, err := fmt.Fprintln(n.in, line); err != nil {
		n.t.Fatalf("writing to node: %v", err)
	}
}

func (n *node) read() string {
	n.t.Helper()
	if !n.out.Scan() {
		n.t.Fatalf("node process ended: %v", n.out.Err())
	}
	return n.out.Text()
}

func (n *node) expect(want string) {
	n.t.Helper()
	if got := n.read(); got != want {
		n.t.Fatalf("node said %q, want %q", got, want)
	}
}

// TestCrossNodeInvalidationLatency: an invalidation on node A (this process)
// removes the key from node B's memory layer (another process) within
// 100 ms at the 99th percentile, over 200 invalidations of the three kinds.
func TestCrossNodeInvalidationLatency(t *testing.T) {
	t.Parallel()
	const rounds = 200
	ctx := context.Background()
	prefix := uniquePrefix(t)
	a := newTestCache(t, Config{Redis: newClient(t, sharedRedis), Prefix: prefix})
	b := startNode(t, sharedRedis, prefix)

	kinds := []struct {
		name       string
		invalidate func(key, tag string) error
	}{
		{"Delete", func(key, _ string) error { return a.Delete(ctx, key) }},
		{"SetAndPersist", func(key, _ string) error {
			return a.SetAndPersist(ctx, key, Item{Value: []byte("new"), TTL: time.Minute}, func(context.Context) error { return nil })
		}},
		{"InvalidateTags", func(_, tag string) error { return a.InvalidateTags(ctx, tag) }},
	}
	lat := make(map[string][]time.Duration)
	var all []time.Duration
	for i := range rounds {
		k := kinds[i%len(kinds)]
		key, tag := fmt.Sprintf("key-%d", i), fmt.Sprintf("tag-%d", i)
		before := a.Stats().InvalidationsSent
		mustSet(t, a, key, Item{Value: []byte("old"), TTL: time.Minute, Tags: []string{tag}})
		sent := a.Stats().InvalidationsSent
		if sent == before {
			t.Fatal("node A did not publish its set")
		}
		// B fills only after it heard A's set: a read that overlaps an
		// invalidation is (rightly) not kept.
		b.send(fmt.Sprintf("fill %s %d", key, sent))
		b.expect("filled")
		b.send("watch " + key)
		b.expect("watching")
		start := time.Now()
		if err := k.invalidate(key, tag); err != nil {
			t.Fatal(err)
		}
		reply := b.read()
		gone, ok := strings.CutPrefix(reply, "gone ")
		if !ok {
			t.Fatalf("round %d (%s): node B said %q", i, k.name, reply)
		}
		ns, err := strconv.ParseInt(gone, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		d := max(time.Unix(0, ns).Sub(start), 0)
		lat[k.name] = append(lat[k.name], d)
		all = append(all, d)
	}
	b.send("quit")
	for _, k := range kinds {
		t.Logf("%-15s p50 %v p99 %v max %v", k.name, percentile(lat[k.name], 50), percentile(lat[k.name], 99), slices.Max(lat[k.name]))
	}
	p99 := percentile(all, 99)
	t.Logf("all %d invalidations: p50 %v p99 %v", len(all), percentile(all, 50), p99)
	if p99 > 100*time.Millisecond {
		t.Fatalf("cross-node invalidation p99 = %v, want <= 100ms", p99)
	}
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// stats asks the node for its outage state and invalidation count.
func (n *node) stats() (degraded bool, recoveries int, received uint64) {
	n.t.Helper()
	n.send("stats")
	var d int
	if _, err := fmt.Sscanf(n.read(), "stats %d %d %d", &d, &recoveries, &received); err != nil {
		n.t.Fatalf("bad stats reply: %v", err)
	}
	return d == 1, recoveries, received
}

// TestOutageTwoProcesses stops the Redis two processes share, checks that
// both keep answering and that the other process does not serve a value
// that may have been invalidated for longer than OutageMaxStale, restarts
// Redis on the same port, and checks that cross-node invalidation works
// again.
func TestOutageTwoProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	prefix := uniquePrefix(t)
	a := newTestCache(t, Config{Redis: newClient(t, srv.Addr()), Prefix: prefix, HealthInterval: 100 * time.Millisecond})
	b := startNode(t, srv.Addr(), prefix)

	mustSet(t, a, "k", Item{Value: []byte("v"), TTL: time.Minute})
	b.send(fmt.Sprintf("fill k %d", a.Stats().InvalidationsSent))
	b.expect("filled")

	srv.Stop()
	outage := time.Now()
	waitFor(t, 5*time.Second, "both nodes to notice the outage", func() bool {
		d, _, _ := b.stats()
		return d && a.Stats().Degraded
	})
	b.send("get k")
	b.expect("hit") // within OutageMaxStale (1 s): served from memory
	if err := a.Delete(ctx, "k"); err != nil {
		t.Fatal(err) // nobody hears this until Redis is back
	}
	time.Sleep(time.Until(outage.Add(1100 * time.Millisecond)))
	b.send("get k")
	b.expect("miss") // past OutageMaxStale: no longer trusted

	srv.Start()
	var received uint64
	waitFor(t, 10*time.Second, "both nodes to recover", func() bool {
		d, r, n := b.stats()
		received = n
		return !d && r > 0 && !a.Stats().Degraded
	})
	// B may or may not have heard A's replay of the outage's delete,
	// depending on which of them reconnected first; count from here.
	time.Sleep(50 * time.Millisecond)
	_, _, received = b.stats()
	mustSet(t, a, "k2", Item{Value: []byte("v"), TTL: time.Minute})
	b.send(fmt.Sprintf("fill k2 %d", received+1))
	b.expect("filled")
	b.send("watch k2")
	b.expect("watching")
	if err := a.Delete(ctx, "k2"); err != nil {
		t.Fatal(err)
	}
	if reply := b.read(); !strings.HasPrefix(reply, "gone ") {
		t.Fatalf("after recovery node B said %q to an invalidation", reply)
	}
	b.send("quit")
}
