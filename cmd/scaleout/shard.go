package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/scaleout/scaleout/shard"
)

// cmdShard runs the sharding tools: for now, "shard rebalance".
func cmdShard(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "rebalance" {
		fmt.Fprintln(stderr, "usage: scaleout shard rebalance -meta DSN -keyspace NAME [-add name=dsn[,dsn…]] [-dry-run] [-abort]")
		return 2
	}
	fs := flag.NewFlagSet("shard rebalance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	meta := fs.String("meta", "", "connection string of the metadata database (required)")
	keyspace := fs.String("keyspace", "", "hash keyspace to rebalance (required)")
	add := fs.String("add", "", "add this shard first: name=dsn[,dsn…] (its primary and replicas)")
	dry := fs.Bool("dry-run", false, "print the plan and change nothing")
	abort := fs.Bool("abort", false, "roll back an unfinished rebalance instead of completing it")
	metrics := fs.String("metrics-addr", "", "serve progress metrics on http://ADDR/metrics while running")
	batch := fs.Int("batch", 0, "buckets moved together between two shards (default 16)")
	readGrace := fs.Duration("read-grace", 0, "how long moved rows stay readable on the old shard (default 1s)")
	writerWait := fs.Duration("writer-wait", 0, "bound on waiting for earlier writers of a moving bucket (default 10s)")
	replicaWait := fs.Duration("replica-wait", 0, "bound on waiting for the target's replicas to catch up (default 10s)")
	passes := fs.Int("catch-up-passes", 0, "catch-up passes before writes are held for the cutover (default 8)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *meta == "" || *keyspace == "" {
		fmt.Fprintln(stderr, "shard rebalance: -meta and -keyspace are required")
		return 2
	}
	cmd := shard.RebalanceCommand{
		MetaDSN:     *meta,
		Keyspace:    *keyspace,
		DryRun:      *dry,
		Abort:       *abort,
		MetricsAddr: *metrics,
		Rebalance: shard.RebalanceConfig{
			Batch: *batch, ReadGrace: *readGrace, WriterWait: *writerWait,
			ReplicaWait: *replicaWait, CatchUpPasses: *passes,
		},
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if *add != "" {
		spec, err := shard.ParseShardSpec(*add)
		if err != nil {
			fmt.Fprintf(stderr, "shard rebalance: -add: %v\n", err)
			return 2
		}
		cmd.AddShard = &spec
	}
	// Ctrl-C stops the run as a crash would; running it again resumes.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := shard.RunRebalance(ctx, cmd, stdout); err != nil {
		fmt.Fprintf(stderr, "shard rebalance: %v\n", err)
		return 1
	}
	return 0
}
