package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// RebalanceCommand is what `scaleout shard rebalance` runs. MetaDSN and
// Keyspace are required.
type RebalanceCommand struct {
	// MetaDSN is the metadata database's connection string.
	MetaDSN string
	// Keyspace is the hash keyspace to rebalance.
	Keyspace string
	// AddShard, if not nil, is added to the keyspace first (AddShard),
	// and the rebalance gives it its share. By default, none: the run
	// resumes an unfinished rebalance or balances the existing shards.
	AddShard *ShardSpec
	// DryRun prints the plan and changes nothing.
	DryRun bool
	// Abort rolls back an unfinished rebalance instead of completing it.
	Abort bool
	// MetricsAddr, if set, serves the rebalance's Prometheus metrics on
	// http://MetricsAddr/metrics while it runs. By default, none.
	MetricsAddr string
	// Rebalance configures the moves (its Progress is replaced by the
	// progress bar).
	Rebalance RebalanceConfig
	// Logger receives details. By default, slog.Default().
	Logger *slog.Logger
}

// ParseShardSpec parses "name=dsn1,dsn2,…" (a shard's name and the DSNs
// of its nodes, comma-separated) as the -add flag gives it.
func ParseShardSpec(s string) (ShardSpec, error) {
	name, nodes, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.TrimSpace(nodes) == "" {
		return ShardSpec{}, fmt.Errorf("shard: %q: want name=dsn[,dsn…]", s)
	}
	spec := ShardSpec{Name: name}
	for _, n := range strings.Split(nodes, ",") {
		if n = strings.TrimSpace(n); n != "" {
			spec.Nodes = append(spec.Nodes, n)
		}
	}
	if len(spec.Nodes) == 0 {
		return ShardSpec{}, fmt.Errorf("shard: %q: no node DSN after the name", s)
	}
	return spec, nil
}

// RunRebalance runs `scaleout shard rebalance`: it prints the plan, then
// moves the buckets with a progress bar and an ETA on out, and a summary
// with the longest write hold. Interrupted (ctx cancelled), it stops as a
// crash would; running it again resumes.
func RunRebalance(ctx context.Context, cmd RebalanceCommand, out io.Writer) error {
	if cmd.MetaDSN == "" || cmd.Keyspace == "" {
		return errors.New("shard rebalance: the metadata DSN and the keyspace are required")
	}
	if cmd.Logger == nil {
		cmd.Logger = slog.Default()
	}
	store, err := OpenStore(ctx, cmd.MetaDSN)
	if err != nil {
		return err
	}
	defer store.Close()
	bar := &progressBar{out: out, width: 30}
	cfg := cmd.Rebalance
	cfg.Progress = bar.update
	if cfg.Logger == nil {
		cfg.Logger = cmd.Logger
	}
	rb := NewRebalancer(store, cfg)
	defer rb.Close()

	if cmd.MetricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(rb.Collector())
		ln, err := net.Listen("tcp", cmd.MetricsAddr)
		if err != nil {
			return fmt.Errorf("shard rebalance: metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		fmt.Fprintf(out, "metrics on http://%s/metrics\n", ln.Addr())
	}

	if cmd.Abort {
		if err := rb.Abort(ctx, cmd.Keyspace); err != nil {
			return err
		}
		fmt.Fprintf(out, "keyspace %s: unfinished rebalance rolled back\n", cmd.Keyspace)
		return nil
	}
	var plan Plan
	switch {
	case cmd.AddShard != nil && cmd.DryRun:
		m, err := store.Map(ctx, cmd.Keyspace)
		if err != nil {
			return err
		}
		m.Shards = append(m.Shards, *cmd.AddShard)
		plan = Plan{Keyspace: cmd.Keyspace, Moves: balance(m)}
	case cmd.AddShard != nil:
		if plan, err = rb.AddShard(ctx, cmd.Keyspace, *cmd.AddShard); err != nil {
			return err
		}
		fmt.Fprintf(out, "added shard %s\n", cmd.AddShard.Name)
	default:
		if plan, err = rb.Plan(ctx, cmd.Keyspace); err != nil {
			return err
		}
	}
	fmt.Fprint(out, plan.String())
	if cmd.DryRun || len(plan.Moves) == 0 {
		return nil
	}
	rep, err := rb.Run(ctx, cmd.Keyspace)
	bar.finish()
	if err != nil {
		return fmt.Errorf("shard rebalance: %w", err)
	}
	rate := 0.0
	if rep.Elapsed > 0 {
		rate = float64(rep.RowsCopied) / rep.Elapsed.Seconds()
	}
	fmt.Fprintf(out, "done: %d moves, %d rows copied in %s (%.0f rows/s), longest write hold %s\n",
		rep.Moves, rep.RowsCopied, rep.Elapsed.Round(time.Millisecond), rate, rep.LongestHold.Round(time.Microsecond))
	return nil
}

// progressBar draws "[####······] 45/455 buckets  rows 12345  ETA 1m2s"
// on one line, redrawn at most every 100ms.
type progressBar struct {
	out   io.Writer
	width int

	mu    sync.Mutex
	last  time.Time
	drawn bool
	p     Progress
}

func (b *progressBar) update(p Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.p = p
	if time.Since(b.last) < 100*time.Millisecond && p.MovesDone < p.MovesTotal {
		return
	}
	b.last = time.Now()
	b.draw()
}

func (b *progressBar) draw() {
	p := b.p
	filled := 0
	if p.MovesTotal > 0 {
		filled = b.width * p.MovesDone / p.MovesTotal
	}
	eta := "ETA -"
	if p.ETA > 0 || p.MovesDone == p.MovesTotal {
		eta = "ETA " + p.ETA.Round(time.Second).String()
	}
	fmt.Fprintf(b.out, "\r[%s%s] %d/%d buckets  rows %d  %s  hold max %s   ",
		strings.Repeat("#", filled), strings.Repeat("·", b.width-filled), p.MovesDone, p.MovesTotal,
		p.RowsCopied, eta, p.LongestHold.Round(time.Millisecond))
	b.drawn = true
}

func (b *progressBar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		b.draw()
		fmt.Fprintln(b.out)
	}
}
