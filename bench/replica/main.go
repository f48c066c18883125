// Command replica-bench measures read throughput through the replica
// package with 0, 1 and 2 replicas against plain pgxpool to the primary,
// side by side in one run: several rounds, the configurations alternating
// in rotated order within each round, so that all of them see the same
// machine load. It prints a Markdown table of queries per second and the
// ratio of each configuration to plain pgxpool.
//
// By default it starts its own primary and two streaming replicas with
// internal/testenv (run as root: the servers run as the postgres user);
// -primary and -replicas point it at existing servers instead.
//
//	go run ./bench/replica -rounds 5 -duration 3s -workers 8
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/scaleout/scaleout/internal/testenv"
	"github.com/scaleout/scaleout/replica"
)

type config struct {
	rounds   int
	duration time.Duration
	warmup   time.Duration
	workers  int
	rows     int
	primary  string
	replicas []string
}

// target is one configuration under test.
type target struct {
	name  string
	query func(ctx context.Context, id int, v *string) error
	close func()
}

func main() {
	var cfg config
	var replicas string
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds; each runs every configuration once, in rotated order")
	flag.DurationVar(&cfg.duration, "duration", 3*time.Second, "measured time per configuration per round")
	flag.DurationVar(&cfg.warmup, "warmup", 500*time.Millisecond, "unmeasured time before each measurement")
	flag.IntVar(&cfg.workers, "workers", 8, "concurrent readers (and pool size per node)")
	flag.IntVar(&cfg.rows, "rows", 10000, "rows in the table read by primary key")
	flag.StringVar(&cfg.primary, "primary", "", "primary DSN (default: start a testenv cluster)")
	flag.StringVar(&replicas, "replicas", "", "comma-separated replica DSNs, with -primary")
	flag.Parse()
	if replicas != "" {
		cfg.replicas = strings.Split(replicas, ",")
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "replica-bench:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	ctx := context.Background()
	if cfg.primary == "" {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		pg, err := testenv.NewPostgresCluster(sctx, 2)
		cancel()
		if err != nil {
			return err
		}
		defer pg.Close()
		cfg.primary, cfg.replicas = pg.DSN(0), []string{pg.DSN(1), pg.DSN(2)}
	}
	if len(cfg.replicas) < 2 {
		return errors.New("need two replicas (-replicas a,b)")
	}
	if err := setup(ctx, cfg); err != nil {
		return err
	}

	targets, err := targets(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range targets {
			t.close()
		}
	}()

	qps := make(map[string][]float64)
	ratios := make(map[string][]float64) // to pgxpool in the same round
	cpu := make(map[string][]float64)    // client CPU µs per query
	errs := make(map[string]int64)
	for round := range cfg.rounds {
		inRound := make(map[string]float64)
		for k := range targets {
			t := targets[(round+k)%len(targets)]
			measure(ctx, cfg, t, cfg.warmup)
			cpu0 := cpuTime()
			n, e := measure(ctx, cfg, t, cfg.duration)
			used := cpuTime() - cpu0
			q := float64(n) / cfg.duration.Seconds()
			inRound[t.name] = q
			qps[t.name] = append(qps[t.name], q)
			if n > 0 {
				cpu[t.name] = append(cpu[t.name], float64(used.Microseconds())/float64(n))
			}
			errs[t.name] += e
			fmt.Fprintf(os.Stderr, "round %d  %-30s %9.0f q/s  %6.1f µs client CPU/query  errors %d\n",
				round+1, t.name, q, float64(used.Microseconds())/float64(max(n, 1)), e)
		}
		for name, q := range inRound {
			ratios[name] = append(ratios[name], q/inRound[targets[0].name])
		}
	}

	fmt.Printf("GOMAXPROCS=%d, %d workers, %d rounds x %v per configuration (order rotated each round), "+
		"point query by primary key over %d rows\n\n", runtime.GOMAXPROCS(0), cfg.workers, cfg.rounds, cfg.duration, cfg.rows)
	fmt.Println("| configuration | median q/s | min q/s | max q/s | ratio to pgxpool, median of per-round ratios (min–max) | client CPU µs/query (median) | errors |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, t := range targets {
		xs, rs := qps[t.name], ratios[t.name]
		fmt.Printf("| %s | %.0f | %.0f | %.0f | %.2f (%.2f–%.2f) | %.1f | %d |\n", t.name, median(xs), slices.Min(xs), slices.Max(xs),
			median(rs), slices.Min(rs), slices.Max(rs), median(cpu[t.name]), errs[t.name])
	}
	return nil
}

// cpuTime returns the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// setup creates and fills the table on the primary and waits until both
// replicas have replayed it.
func setup(ctx context.Context, cfg config) error {
	c, err := replica.Open(ctx, replica.Config{Nodes: append([]string{cfg.primary}, cfg.replicas...),
		CheckInterval: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Exec(ctx, "drop table if exists bench_kv; create table bench_kv (id int primary key, v text)"); err != nil {
		return fmt.Errorf("creating table: %w", err)
	}
	if _, err := c.Exec(ctx, "insert into bench_kv select g, md5(g::text) from generate_series(1, $1::int) g", cfg.rows); err != nil {
		return fmt.Errorf("filling table: %w", err)
	}
	if _, err := c.Exec(ctx, "analyze bench_kv"); err != nil {
		return fmt.Errorf("analyzing table: %w", err)
	}
	tok, err := c.Token(ctx)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		caught := 0
		for _, n := range c.Status().Nodes {
			if n.Role == replica.RoleReplica && n.LSN >= tok {
				caught++
			}
		}
		if caught >= 2 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("replicas did not catch up within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func targets(ctx context.Context, cfg config) ([]target, error) {
	const sql = "select v from bench_kv where id = $1"
	pcfg, err := pgxpool.ParseConfig(cfg.primary)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = int32(cfg.workers)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	out := []target{{
		name: "pgxpool → primary",
		query: func(ctx context.Context, id int, v *string) error {
			return pool.QueryRow(ctx, sql, id).Scan(v)
		},
		close: pool.Close,
	}}
	rcfg, err := pgxpool.ParseConfig(cfg.replicas[0])
	if err != nil {
		return nil, err
	}
	rcfg.MaxConns = int32(cfg.workers)
	rpool, err := pgxpool.NewWithConfig(ctx, rcfg)
	if err != nil {
		return nil, err
	}
	out = append(out, target{
		name: "pgxpool → replica 1 (reference)",
		query: func(ctx context.Context, id int, v *string) error {
			return rpool.QueryRow(ctx, sql, id).Scan(v)
		},
		close: rpool.Close,
	})
	for n := 0; n <= 2; n++ {
		c, err := replica.Open(ctx, replica.Config{
			Nodes:    append([]string{cfg.primary}, cfg.replicas[:n]...),
			MaxConns: int32(cfg.workers),
			Logger:   slog.New(slog.DiscardHandler),
		})
		if err != nil {
			return nil, err
		}
		name := map[int]string{0: "replica, 0 replicas (primary)", 1: "replica, 1 replica", 2: "replica, 2 replicas"}[n]
		out = append(out, target{
			name: name,
			query: func(ctx context.Context, id int, v *string) error {
				return c.QueryRow(ctx, sql, id).Scan(v)
			},
			close: c.Close,
		})
	}
	return out, nil
}

// measure runs cfg.workers readers against t for d and returns the
// queries completed and the errors.
func measure(ctx context.Context, cfg config, t target, d time.Duration) (n, errs int64) {
	var done, failed atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			var v string
			for time.Now().Before(stop) {
				if err := t.query(ctx, rng.IntN(cfg.rows)+1, &v); err != nil {
					failed.Add(1)
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return done.Load(), failed.Load()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}
