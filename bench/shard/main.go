// Command shard-bench measures the online rebalance of the shard package:
// a hash keyspace over -shards shard databases (one PostgreSQL server, one
// database per shard) holding -rows rows gets one more shard, and the run
// reports the plan, rows copied per second, the longest bucket write hold
// seen by the rebalancer, and the longest and 99th-percentile write
// latency seen by -writers clients writing all along (through Router.Do).
// It creates its databases on -server and drops them at the end.
//
//	go run ./bench/shard -rows 400000 -shards 8 -writers 4 -batch 16
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/scaleout/scaleout/replica"
	"github.com/scaleout/scaleout/shard"
)

func main() {
	server := flag.String("server", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server to create the databases on")
	rows := flag.Int("rows", 400_000, "rows in the keyspace")
	shards := flag.Int("shards", 8, "shards before adding one")
	buckets := flag.Int("buckets", shard.DefaultBuckets, "logical buckets")
	writers := flag.Int("writers", 4, "concurrent writers during the rebalance")
	batch := flag.Int("batch", 16, "buckets moved together (RebalanceConfig.Batch)")
	flag.Parse()
	if err := run(*server, *rows, *shards, *buckets, *writers, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "shard-bench:", err)
		os.Exit(1)
	}
}

func run(server string, nrows, nshards, nbuckets, nwriters, nbatch int) error {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	cfg := admin.Config()
	prefix := fmt.Sprintf("shard_bench_%08x", rand.Uint32())
	var dsns []string
	for i := 0; i <= nshards+1; i++ {
		name := fmt.Sprintf("%s_%d", prefix, i)
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			return err
		}
		defer admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		dsns = append(dsns, fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name))
	}
	meta, shardDSNs := dsns[0], dsns[1:]
	specs := make([]shard.ShardSpec, nshards+1)
	for i := range specs {
		specs[i] = shard.ShardSpec{Name: fmt.Sprintf("s%d", i), Nodes: []string{shardDSNs[i]}}
	}
	quiet := slog.New(slog.DiscardHandler)
	for _, dsn := range shardDSNs {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		_, err = c.Exec(ctx, `CREATE TABLE items (id bigint PRIMARY KEY, owner bigint NOT NULL, bucket int NOT NULL, val bigint NOT NULL, note text NOT NULL);
			CREATE INDEX ON items (bucket)`)
		c.Close(ctx)
		if err != nil {
			return err
		}
	}
	store, err := shard.OpenStore(ctx, meta)
	if err != nil {
		return err
	}
	defer store.Close()
	ks := "bench"
	if err := store.CreateKeyspace(ctx, shard.NewHashMap(ks, nbuckets, specs[:nshards]...)); err != nil {
		return err
	}
	if err := store.RegisterTable(ctx, ks, shard.Table{Name: "items", KeyColumn: "owner", BucketColumn: "bucket"}); err != nil {
		return err
	}
	ccfg := replica.Config{MaxConns: 4, Logger: quiet}
	r, err := shard.New(ctx, shard.Config{MetaDSN: meta, Keyspace: ks, Cluster: ccfg, Logger: quiet})
	if err != nil {
		return err
	}
	defer r.Close()

	// Load: owners 0..rows/4, 4 rows each on average.
	t0 := time.Now()
	owners := int64(max(nrows/4, 1))
	type batch struct {
		id, owner, val []int64
		bucket         []int32
	}
	byShard := map[string]*batch{}
	for i := range nrows {
		o := int64(i) % owners
		s, _ := r.ShardOf(ctx, shard.IntKey(o))
		b := byShard[s]
		if b == nil {
			b = &batch{}
			byShard[s] = b
		}
		b.id, b.owner, b.val, b.bucket = append(b.id, int64(i)), append(b.owner, o), append(b.val, int64(i)), append(b.bucket, int32(r.Bucket(shard.IntKey(o))))
	}
	for _, s := range r.Shards() {
		b := byShard[s.Name]
		if _, err := s.DB.Exec(ctx, `INSERT INTO items SELECT id, o, b, v, repeat('x', 100) FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[]) AS u(id, o, b, v)`,
			b.id, b.owner, b.bucket, b.val); err != nil {
			return err
		}
		if _, err := s.DB.Exec(ctx, "ANALYZE items"); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "loaded %d rows in %s\n", nrows, time.Since(t0).Round(time.Millisecond))

	// Writers, all along.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lat []time.Duration
	var werrs int
	for w := range nwriters {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := rng.Int64N(int64(nrows))
				o := id % owners
				start := time.Now()
				err := r.Do(ctx, shard.IntKey(o), func(db *replica.Cluster) error {
					_, err := db.Exec(ctx, "UPDATE items SET val = val + 1 WHERE id = $1 AND owner = $2", id, o)
					return err
				})
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				if err != nil {
					werrs++
				}
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		})
	}
	rb := shard.NewRebalancer(store, shard.RebalanceConfig{Cluster: ccfg, Logger: quiet, Batch: nbatch})
	defer rb.Close()
	plan, err := rb.AddShard(ctx, ks, specs[nshards])
	if err != nil {
		return err
	}
	fmt.Fprint(os.Stderr, plan.String())
	mu.Lock()
	lat = lat[:0]
	mu.Unlock()
	rep, err := rb.Run(ctx, ks)
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(q*float64(len(lat))))]
	}
	fmt.Printf("| rows | shards | buckets | batch | moves | rows copied | time | rows/s | moves/s | longest bucket hold | writes | write p50 | write p99 | longest write | failed writes |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	fmt.Printf("| %d | %d→%d | %d | %d | %d | %d | %s | %.0f | %.1f | %s | %d | %s | %s | %s | %d |\n",
		nrows, nshards, nshards+1, nbuckets, nbatch, rep.Moves, rep.RowsCopied, rep.Elapsed.Round(time.Millisecond),
		float64(rep.RowsCopied)/rep.Elapsed.Seconds(), float64(rep.Moves)/rep.Elapsed.Seconds(),
		rep.LongestHold.Round(time.Millisecond/10), len(lat), p(0.5).Round(time.Microsecond), p(0.99).Round(time.Microsecond),
		p(1).Round(time.Millisecond/10), werrs)
	return nil
}
