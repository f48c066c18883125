package shard

import (
	"context"
	"strconv"
	"testing"
)

// benchRouter returns a Router over a fresh keyspace of the given map,
// without opening a Router per benchmark run.
func benchRouter(b *testing.B, m *Map) *Router {
	b.Helper()
	meta, _ := databases(b)
	store := openStore(b, meta)
	if err := store.CreateKeyspace(context.Background(), m); err != nil {
		b.Fatal(err)
	}
	return newRouter(b, meta, m.Keyspace)
}

// BenchmarkRoute measures what routing adds to each call: the key's
// shard's cluster, from the compiled map behind an atomic pointer.
func BenchmarkRoute(b *testing.B) {
	_, shards := databases(b)
	ctx := context.Background()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i*7919)
	}
	for _, tc := range []struct {
		name string
		m    func(ks string) *Map
		key  func(i int) Key
		read bool
	}{
		{"hash/int/For", func(ks string) *Map { return NewHashMap(ks, 0, specs(shards, 8)...) }, func(i int) Key { return IntKey(int64(i)) }, false},
		{"hash/int/ForRead", func(ks string) *Map { return NewHashMap(ks, 0, specs(shards, 8)...) }, func(i int) Key { return IntKey(int64(i)) }, true},
		{"hash/string/For", func(ks string) *Map { return NewHashMap(ks, 0, specs(shards, 8)...) }, func(i int) Key { return StringKey(keys[i&1023]) }, false},
		{"range/int/For", func(ks string) *Map {
			var rs []Range
			for s := range 8 {
				rs = append(rs, Range{From: IntKey(int64(s) << 20), To: IntKey(int64(s+1) << 20), Shard: "s" + strconv.Itoa(s)})
			}
			return NewRangeMap(ks, rs, specs(shards, 8)...)
		}, func(i int) Key { return IntKey(int64(i) & (8<<20 - 1)) }, false},
		{"directory/cached/For", func(ks string) *Map { return NewDirectoryMap(ks, specs(shards, 8)...) }, func(i int) Key { return StringKey(keys[i&1023]) }, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := benchRouter(b, tc.m(keyspaceName(b)))
			for i := range 1024 { // warm the directory cache
				if _, err := r.For(ctx, tc.key(i)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				var err error
				if tc.read {
					_, err = r.ForRead(ctx, tc.key(i))
				} else {
					_, err = r.For(ctx, tc.key(i))
				}
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkScatterGather compares one query on each of 8 shards run
// concurrently (ScatterGather) with the same queries run one shard after
// another: "cpu" is a count the server computes (the 2 cores bound the
// gain), "wait" a query that mostly waits (2ms, as a disk or a remote
// server would).
func BenchmarkScatterGather(b *testing.B) {
	_, shards := databases(b)
	ctx := context.Background()
	r := benchRouter(b, NewHashMap(keyspaceName(b), 0, specs(shards, 8)...))
	for _, q := range []struct{ name, sql string }{
		{"cpu", "SELECT count(*) FROM generate_series(1, 20000)"},
		{"wait", "SELECT count(*) FROM pg_sleep(0.002), generate_series(1, 20000)"},
	} {
		count := func(ctx context.Context, s Shard) (int64, error) {
			var n int64
			err := s.DB.QueryRow(ctx, q.sql).Scan(&n)
			return n, err
		}
		b.Run(q.name+"/concurrent", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				g := ScatterGather(ctx, r, count)
				if g.Partial || Sum(g) != 8*20000 {
					b.Fatal(g.Err())
				}
			}
		})
		b.Run(q.name+"/sequential", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var sum int64
				for _, s := range r.Shards() {
					n, err := count(ctx, s)
					if err != nil {
						b.Fatal(err)
					}
					sum += n
				}
				if sum != 8*20000 {
					b.Fatal(sum)
				}
			}
		})
	}
}
