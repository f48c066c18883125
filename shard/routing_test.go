package shard

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func fakeShards(n int) []ShardSpec {
	out := make([]ShardSpec, n)
	for i := range n {
		out[i] = ShardSpec{Name: fmt.Sprintf("s%d", i), Nodes: []string{"postgres://x"}}
	}
	return out
}

func TestHashDistribution(t *testing.T) {
	t.Parallel()
	const keys = 1_000_000
	m := NewHashMap("d", 0, fakeShards(8)...)
	for _, tc := range []struct {
		name string
		key  func(i int) Key
	}{
		{"int keys", func(i int) Key { return IntKey(int64(i)) }},
		{"string keys", func(i int) Key { return StringKey("user:" + strconv.Itoa(i)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			load := map[string]int{}
			for i := range keys {
				load[m.Buckets[BucketOf(tc.key(i), len(m.Buckets))]]++
			}
			mx := 0
			for _, n := range load {
				mx = max(mx, n)
			}
			ratio := float64(mx) / (keys / 8.0)
			t.Logf("max/mean load over 8 shards: %.4f (%v)", ratio, load)
			if len(load) != 8 || ratio > 1.05 {
				t.Fatalf("max/mean = %.4f over %d shards, want <= 1.05 over 8", ratio, len(load))
			}
		})
	}
}

func TestAddNinthShardMovesOneNinth(t *testing.T) {
	t.Parallel()
	const keys = 1_000_000
	m := NewHashMap("d", 0, fakeShards(8)...)
	n := m.clone()
	n.Shards = append(n.Shards, ShardSpec{Name: "s8", Nodes: []string{"postgres://y"}})
	moves := balance(n)
	for _, mv := range moves {
		n.Buckets[mv.Bucket] = mv.To
	}
	load := map[string]int{}
	for _, s := range n.Buckets {
		load[s]++
	}
	if len(load) != 9 {
		t.Fatalf("after the plan %d shards own buckets, want 9", len(load))
	}
	for s, c := range load {
		if c < 4096/9 || c > 4096/9+1 {
			t.Errorf("shard %s owns %d buckets, want %d or %d", s, c, 4096/9, 4096/9+1)
		}
	}
	movedBuckets, movedModulo := 0, 0
	for i := range keys {
		k := IntKey(int64(i))
		b := BucketOf(k, len(m.Buckets))
		if m.Buckets[b] != n.Buckets[b] {
			movedBuckets++
		}
		if k.Hash()%8 != k.Hash()%9 {
			movedModulo++
		}
	}
	fb, fm := float64(movedBuckets)/keys, float64(movedModulo)/keys
	t.Logf("adding a 9th shard moves %.4f of keys with buckets (%d bucket moves), %.4f with hash mod N", fb, len(moves), fm)
	if fb > 1.0/9+0.01 {
		t.Errorf("buckets: %.4f of keys moved, want <= %.4f", fb, 1.0/9+0.01)
	}
	if fm < 0.85 {
		t.Errorf("hash mod N moved %.4f of keys; expected about 8/9", fm)
	}
}

func TestMapValidate(t *testing.T) {
	t.Parallel()
	sh := fakeShards(2)
	for _, tc := range []struct {
		name string
		m    *Map
		want string
	}{
		{"no keyspace", NewHashMap("", 4, sh...), "empty keyspace"},
		{"no shards", &Map{Keyspace: "k", Strategy: Hash}, "no shards"},
		{"duplicate shard", NewHashMap("k", 4, sh[0], sh[0]), "duplicate name"},
		{"unknown bucket owner", func() *Map { m := NewHashMap("k", 4, sh...); m.Buckets[2] = "zz"; return m }(), `bucket 2: unknown shard "zz"`},
		{"overlapping ranges", NewRangeMap("k", []Range{{From: IntKey(0), To: IntKey(10), Shard: "s0"}, {From: IntKey(5), To: IntKey(20), Shard: "s1"}}, sh...), "overlaps"},
		{"empty range", NewRangeMap("k", []Range{{From: IntKey(10), To: IntKey(10), Shard: "s0"}}, sh...), "not below"},
		{"mixed kinds", NewRangeMap("k", []Range{{From: IntKey(0), To: StringKey("a"), Shard: "s0"}}, sh...), "different kinds"},
		{"unknown strategy", &Map{Keyspace: "k", Strategy: "zz", Shards: sh}, "unknown strategy"},
		{"valid hash", NewHashMap("k", 0, sh...), ""},
		{"valid range", NewRangeMap("k", []Range{{To: IntKey(10), Shard: "s0"}, {From: IntKey(10), Shard: "s1"}}, sh...), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidMap) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrInvalidMap naming %q", err, tc.want)
			}
		})
	}
}

func TestRangeRouting(t *testing.T) {
	meta, shards := databases(t)
	ctx := context.Background()
	store := openStore(t, meta)
	ks := keyspaceName(t)
	m := NewRangeMap(ks, []Range{
		{From: IntKey(0), To: IntKey(1000), Shard: "s0"},
		{From: IntKey(1000), To: IntKey(5000), Shard: "s1"},
	}, specs(shards, 3)...)
	if err := store.CreateKeyspace(ctx, m); err != nil {
		t.Fatal(err)
	}
	r := newRouter(t, meta, ks)
	for _, tc := range []struct {
		key  Key
		want string
		err  error
	}{
		{IntKey(0), "s0", nil},
		{IntKey(999), "s0", nil},
		{IntKey(1000), "s1", nil},
		{IntKey(4999), "s1", nil},
		{IntKey(5000), "", ErrOutOfRange},
		{IntKey(-1), "", ErrOutOfRange},
		{StringKey("a"), "", ErrOutOfRange},
	} {
		t.Run(tc.key.String(), func(t *testing.T) {
			got, err := r.ShardOf(ctx, tc.key)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("ShardOf(%s) = %q, %v; want %q, %v", tc.key, got, err, tc.want, tc.err)
			}
			if tc.err != nil {
				if _, err := r.For(ctx, tc.key); !errors.Is(err, ErrOutOfRange) {
					t.Fatalf("For(%s) = %v, want ErrOutOfRange", tc.key, err)
				}
			}
		})
	}

	// Splitting a range is a new version every router picks up.
	n, err := r.Map().SplitRange(IntKey(3000), "s2")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Publish(ctx, n); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "router picks up the split", func() bool { return r.Version() == n.Version })
	for k, want := range map[int64]string{2999: "s1", 3000: "s2", 4999: "s2"} {
		if got, err := r.ShardOf(ctx, IntKey(k)); err != nil || got != want {
			t.Errorf("after split, ShardOf(%d) = %q, %v; want %q", k, got, err, want)
		}
	}
	if _, err := r.Map().SplitRange(IntKey(7000), "s2"); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("SplitRange outside every range = %v, want ErrOutOfRange", err)
	}
	if err := store.Publish(ctx, n); !errors.Is(err, ErrConflict) {
		t.Errorf("publishing the same version twice = %v, want ErrConflict", err)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCrossShardWriteRefused(t *testing.T) {
	meta, shards := databases(t)
	ctx := context.Background()
	store := openStore(t, meta)
	ks := keyspaceName(t)
	if err := store.CreateKeyspace(ctx, NewHashMap(ks, 64, specs(shards, 2)...)); err != nil {
		t.Fatal(err)
	}
	r := newRouter(t, meta, ks)
	// Find two keys on different shards and two on the same.
	a := IntKey(1)
	sa, _ := r.ShardOf(ctx, a)
	var other, same Key
	for i := int64(2); other.IsZero() || same.IsZero(); i++ {
		s, _ := r.ShardOf(ctx, IntKey(i))
		if s != sa && other.IsZero() {
			other = IntKey(i)
		}
		if s == sa && same.IsZero() {
			same = IntKey(i)
		}
	}
	if _, err := r.ForKeys(ctx, a, other); !errors.Is(err, ErrCrossShard) {
		t.Fatalf("ForKeys over two shards = %v, want ErrCrossShard", err)
	}
	db, err := r.ForKeys(ctx, a, same)
	if err != nil {
		t.Fatalf("ForKeys over one shard: %v", err)
	}
	want, _ := r.For(ctx, a)
	if db != want {
		t.Fatal("ForKeys returned another shard than For")
	}
}

func TestScatterGatherWithShardDown(t *testing.T) {
	meta, shards := databases(t)
	ctx := context.Background()
	store := openStore(t, meta)
	ks := keyspaceName(t)
	sp := specs(shards, 3)
	// Shard s1 points at a closed port.
	sp[1].Nodes = []string{"postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=1"}
	if err := store.CreateKeyspace(ctx, NewHashMap(ks, 64, sp...)); err != nil {
		t.Fatal(err)
	}
	r := newRouter(t, meta, ks)
	g := ScatterGather(ctx, r, func(ctx context.Context, s Shard) (int64, error) {
		var n int64
		err := s.DB.QueryRow(ctx, "SELECT 10 + $1::int", len(s.Name)).Scan(&n)
		return n, err
	})
	if !g.Partial {
		t.Fatal("a shard is down but the result is not Partial")
	}
	if len(g.Results) != 3 {
		t.Fatalf("%d results, want one per shard (3)", len(g.Results))
	}
	for _, res := range g.Results {
		if (res.Shard == "s1") != (res.Err != nil) {
			t.Errorf("shard %s: err %v", res.Shard, res.Err)
		}
	}
	if got := Sum(g); got != 24 {
		t.Errorf("Sum = %d, want 24 (two live shards)", got)
	}
	if err := g.Err(); err == nil || !strings.Contains(err.Error(), `"s1"`) {
		t.Errorf("Err() = %v, want it to name s1", err)
	}
}

func TestMergeHelpers(t *testing.T) {
	t.Parallel()
	g := Gathered[[]int]{Results: []Result[[]int]{
		{Shard: "a", Value: []int{1, 4, 9}},
		{Shard: "b", Value: []int{2, 3, 10}},
		{Shard: "c", Err: errors.New("down")},
		{Shard: "d", Value: []int{5}},
	}, Partial: true}
	cmpInt := func(a, b int) int { return a - b }
	for _, tc := range []struct {
		name string
		got  []int
		want []int
	}{
		{"concat", Concat(g), []int{1, 4, 9, 2, 3, 10, 5}},
		{"ordered limit 4", MergeOrdered(g, cmpInt, 4), []int{1, 2, 3, 4}},
		{"ordered no limit", MergeOrdered(g, cmpInt, 0), []int{1, 2, 3, 4, 5, 9, 10}},
		{"ordered limit past end", MergeOrdered(g, cmpInt, 100), []int{1, 2, 3, 4, 5, 9, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if fmt.Sprint(tc.got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
	counts := Gathered[int64]{Results: []Result[int64]{{Value: 3}, {Value: 4}, {Value: 100, Err: errors.New("x")}}}
	if s := Sum(counts); s != 7 {
		t.Fatalf("Sum = %d, want 7 (failed shard left out)", s)
	}
}

// childEnv, when set, makes the test binary a directory-placing child.
const childEnv = "SHARD_TEST_DIRECTORY_CHILD"

// directoryChild places the keys given in the environment at the start
// time given and prints "key shard" lines.
func directoryChild() int {
	meta, ks := os.Getenv("SHARD_TEST_META"), os.Getenv("SHARD_TEST_KEYSPACE")
	keys := strings.Fields(os.Getenv("SHARD_TEST_KEYS"))
	startNs, _ := strconv.ParseInt(os.Getenv("SHARD_TEST_START"), 10, 64)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := New(ctx, Config{MetaDSN: meta, Keyspace: ks, Cluster: clusterConfig(), Logger: quiet})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Close()
	time.Sleep(time.Until(time.Unix(0, startNs)))
	for _, k := range keys {
		s, err := r.ShardOf(ctx, StringKey(k))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("%s %s\n", k, s)
	}
	return 0
}

func TestDirectoryTwoProcessesAgree(t *testing.T) {
	meta, shards := databases(t)
	ctx := context.Background()
	store := openStore(t, meta)
	ks := keyspaceName(t)
	if err := store.CreateKeyspace(ctx, NewDirectoryMap(ks, specs(shards, 4)...)); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := range 200 {
		keys = append(keys, fmt.Sprintf("tenant-%d", i))
	}
	start := time.Now().Add(1500 * time.Millisecond).UnixNano()
	// Both children place the same keys in the same order from the same
	// instant, so most placements race.
	run := func(order []string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", "SHARD_TEST_META="+meta, "SHARD_TEST_KEYSPACE="+ks,
			"SHARD_TEST_KEYS="+strings.Join(order, " "), fmt.Sprintf("SHARD_TEST_START=%d", start))
		return cmd
	}
	outs := make([]bytes.Buffer, 2)
	cmds := []*exec.Cmd{run(keys), run(keys)}
	for i, c := range cmds {
		c.Stdout, c.Stderr = &outs[i], os.Stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	placed := make([]map[string]string, 2)
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		placed[i] = map[string]string{}
		sc := bufio.NewScanner(&outs[i])
		for sc.Scan() {
			k, s, _ := strings.Cut(sc.Text(), " ")
			placed[i][k] = s
		}
	}
	load := map[string]int{}
	for _, k := range keys {
		a, b := placed[0][k], placed[1][k]
		if a == "" || a != b {
			t.Fatalf("key %s placed on %q by one process and %q by the other", k, a, b)
		}
		load[a]++
	}
	// A third view, from the database, agrees too, and the least-loaded
	// policy spread the keys evenly.
	r := newRouter(t, meta, ks)
	for _, k := range keys[:20] {
		if s, err := r.ShardOf(ctx, StringKey(k)); err != nil || s != placed[0][k] {
			t.Fatalf("router in this process: key %s on %q (%v), children said %q", k, s, err, placed[0][k])
		}
	}
	for s, n := range load {
		if n != len(keys)/4 {
			t.Errorf("shard %s got %d keys, want %d (least-loaded placement): %v", s, n, len(keys)/4, load)
		}
	}
}
