package shard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A transaction that wrote to a bucket before the move started and
// commits in the middle of it must not be lost: the move waits for it.
func TestRebalanceWaitsForInFlightWriter(t *testing.T) {
	f := newItems(t, 2, 8, 400)
	ctx := context.Background()
	rb := f.rebalancer(t, RebalanceConfig{})
	plan, err := rb.AddShard(ctx, f.ks, ShardSpec{Name: "s2", Nodes: []string{f.shards[2]}})
	if err != nil {
		t.Fatal(err)
	}
	first := plan.Moves[0].Bucket
	var id int64 = -1
	for i, o := range f.owner {
		if f.router.Bucket(IntKey(o)) == first {
			id = i
			break
		}
	}
	db, _ := f.router.For(ctx, IntKey(f.owner[id]))
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("UPDATE %s SET val = 424242 WHERE id = $1", f.table), id); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := rb.Run(ctx, f.ks)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Run finished (%v) while a transaction that wrote to a moving bucket was open", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	f.expect[id] = 424242
	f.verify(t)
}

// A new map version reaches a Router through LISTEN/NOTIFY, long before
// its poll would find it.
func TestRouterFollowsNotify(t *testing.T) {
	meta, shards := databases(t)
	ctx := context.Background()
	store := openStore(t, meta)
	ks := keyspaceName(t)
	if err := store.CreateKeyspace(ctx, NewHashMap(ks, 16, specs(shards, 2)...)); err != nil {
		t.Fatal(err)
	}
	r, err := New(ctx, Config{MetaDSN: meta, Keyspace: ks, PollInterval: time.Minute, Cluster: clusterConfig(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	time.Sleep(200 * time.Millisecond) // LISTEN is set up
	for v := int64(2); v <= 3; v++ {
		m := r.Map()
		m.Version = v
		m.Buckets[0] = "s1"
		m.Buckets[1] = fmt.Sprint("s", v%2)
		start := time.Now()
		if err := store.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for r.Version() != v {
			if time.Now().After(deadline) {
				t.Fatalf("router still at version %d 5s after version %d was published (poll every minute)", r.Version(), v)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("version %d picked up in %s", v, time.Since(start))
		if got, _ := r.ShardOf(ctx, IntKey(0)); got != m.Buckets[BucketOf(IntKey(0), 16)] {
			t.Errorf("routes by an old map: key 0 on %s", got)
		}
	}
}

func TestRunRebalanceCommand(t *testing.T) {
	f := newItems(t, 2, 16, 1_000)
	ctx := context.Background()
	spec, err := ParseShardSpec("s2=" + f.shards[2])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cmd  RebalanceCommand
		want []string
	}{
		{"dry run", RebalanceCommand{AddShard: &spec, DryRun: true}, []string{"5 bucket moves", "s0 -> s2: 2 buckets", "s1 -> s2: 3 buckets"}},
		{"add shard", RebalanceCommand{AddShard: &spec, MetricsAddr: "127.0.0.1:0"}, []string{"metrics on http://127.0.0.1:", "added shard s2", "5 bucket moves", "] 5/5 buckets", "ETA 0s", "done: 5 moves"}},
		{"balanced", RebalanceCommand{}, []string{"balanced, nothing to move"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			tc.cmd.MetaDSN, tc.cmd.Keyspace, tc.cmd.Logger = f.meta, f.ks, quiet
			tc.cmd.Rebalance.Cluster = clusterConfig()
			if err := RunRebalance(ctx, tc.cmd, &out); err != nil {
				t.Fatalf("RunRebalance: %v\n%s", err, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
	f.verify(t)
	if err := RunRebalance(ctx, RebalanceCommand{Keyspace: f.ks}, &bytes.Buffer{}); err == nil {
		t.Error("RunRebalance without a metadata DSN succeeded")
	}
}

func TestCollectors(t *testing.T) {
	f := newItems(t, 2, 8, 200)
	ctx := context.Background()
	rb := f.rebalancer(t, RebalanceConfig{})
	if _, err := rb.AddShard(ctx, f.ks, ShardSpec{Name: "s2", Nodes: []string{f.shards[2]}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rb.Run(ctx, f.ks); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(rb.Collector(), f.router.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[mf.GetName()] = v
		}
	}
	if len(got) != 12 {
		t.Errorf("gathered %d metrics, want 12: %v", len(got), got)
	}
	for name, want := range map[string]float64{
		"scaleout_shard_rebalance_moves_total":    2,
		"scaleout_shard_rebalance_moves_planned":  2,
		"scaleout_shard_rebalance_progress_ratio": 1,
		"scaleout_shard_rebalance_running":        0,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if got["scaleout_shard_rebalance_rows_copied_total"] == 0 {
		t.Error("no rows copied reported")
	}
	waitFor(t, "router at the last version", func() bool {
		v, _ := f.store.Version(ctx, f.ks)
		return f.router.Version() == v
	})
	mfs, _ = reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "scaleout_shard_map_version" {
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != float64(f.router.Version()) {
				t.Errorf("scaleout_shard_map_version = %v, want %d", v, f.router.Version())
			}
		}
	}
}

func TestParseShardSpec(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want ShardSpec
		err  bool
	}{
		{"s9=postgres://a/b", ShardSpec{Name: "s9", Nodes: []string{"postgres://a/b"}}, false},
		{" s9 = postgres://a/b , postgres://c/d ", ShardSpec{Name: "s9", Nodes: []string{"postgres://a/b", "postgres://c/d"}}, false},
		{"s9", ShardSpec{}, true},
		{"=postgres://a", ShardSpec{}, true},
		{"s9=", ShardSpec{}, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseShardSpec(tc.in)
			if (err != nil) != tc.err || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("ParseShardSpec(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

func FuzzKeyJSON(f *testing.F) {
	for _, s := range []string{`1`, `-9223372036854775808`, `"abc"`, `null`, `"\u00e9"`, `1.5`, `{}`, `"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var k Key
		if err := json.Unmarshal(b, &k); err != nil {
			return
		}
		out, err := json.Marshal(k)
		if err != nil {
			t.Fatalf("Marshal(%#v): %v", k, err)
		}
		var k2 Key
		if err := json.Unmarshal(out, &k2); err != nil || k2 != k {
			t.Fatalf("round trip of %s: %s gives %#v (%v), want %#v", b, out, k2, err, k)
		}
	})
}

func FuzzParseShardSpec(f *testing.F) {
	for _, s := range []string{"s1=postgres://x", "a=b,c", "=", "", "x=,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseShardSpec(s)
		if err != nil {
			return
		}
		if spec.Name == "" || len(spec.Nodes) == 0 {
			t.Fatalf("ParseShardSpec(%q) = %v without error", s, spec)
		}
	})
}
