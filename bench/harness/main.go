// Command harness runs the side-by-side benchmarks of scaleout against its
// peers; bench/run installs and builds what it needs and then calls it.
//
//	harness lb [flags]     the load balancer against the backend directly,
//	                       nginx, HAProxy and Caddy
//
// Each scenario starts every server on loopback on free ports from the
// templates kept in bench/, runs each contender several times in
// alternation with the same load, prints markdown tables (median and
// min–max, ratios of scaleout to each peer) and writes the same as JSON
// under bench/results/. Every load is bounded in time and count and targets
// 127.0.0.1 only. Further scenarios (cache, cdn, replica, realtime) are
// added to the scenarios table below.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// scenario is one `bench/run NAME` subcommand.
type scenario struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

func scenarios() map[string]scenario {
	return map[string]scenario{
		"lb": {"the load balancer against the backend directly, nginx, HAProxy and Caddy", runLB},
	}
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	all := scenarios()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(all)
		return 2
	}
	sc, ok := all[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "harness: unknown scenario %q\n", args[0])
		usage(all)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := sc.run(ctx, args[1:]); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "harness %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(all map[string]scenario) {
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(os.Stderr, "usage: bench/run SCENARIO [flags]   (SCENARIO -h for its flags)")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, all[n].summary)
	}
}
