// Command scaleoutprof is `scaleout serve` with profiling switched by
// signals, for finding where the gateway spends its time under a benchmark
// load. It builds and runs the same gateway as `scaleout serve --config F
// --watch 0` (same config, same data plane), and:
//
//   - on SIGUSR1 starts a CPU profile (to -cpuprofile) and notes the
//     allocation counters;
//   - on SIGUSR2 stops the CPU profile, writes the allocation profile
//     (to -allocprofile, "allocs" since the start of the process, with the
//     one taken at SIGUSR1 beside it as -allocprofile.base) and prints one
//     JSON line on stdout with the allocations and GC cycles in between.
//
// Compare allocation profiles with
// `go tool pprof -sample_index=alloc_space -base F.base F`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/scaleout/scaleout/config"
	"github.com/scaleout/scaleout/gateway"
)

// Window is what SIGUSR2 prints: the allocator's work between the two
// signals.
type Window struct {
	Seconds    float64 `json:"seconds"`
	Mallocs    uint64  `json:"mallocs"`
	AllocBytes uint64  `json:"alloc_bytes"`
	GCCycles   uint32  `json:"gc_cycles"`
	HeapInuse  uint64  `json:"heap_inuse_bytes"`
}

func main() {
	path := flag.String("config", "scaleout.yaml", "gateway configuration file")
	cpuOut := flag.String("cpuprofile", "cpu.pprof", "CPU profile written between SIGUSR1 and SIGUSR2")
	allocOut := flag.String("allocprofile", "allocs.pprof", "allocation profile written at SIGUSR2")
	flag.Parse()
	if err := run(*path, *cpuOut, *allocOut); err != nil {
		fmt.Fprintf(os.Stderr, "scaleoutprof: %v\n", err)
		os.Exit(1)
	}
}

func run(path, cpuOut, allocOut string) error {
	c, err := config.Load(path)
	if err != nil {
		return fmt.Errorf("loading config: %w", err)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Log.Level))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	g, err := gateway.New(c, gateway.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("building gateway: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go profileOnSignals(ctx, cpuOut, allocOut, log)
	return g.Run(ctx)
}

func profileOnSignals(ctx context.Context, cpuOut, allocOut string, log *slog.Logger) {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sig)
	var (
		f       *os.File
		started time.Time
		before  runtime.MemStats
	)
	for {
		select {
		case <-ctx.Done():
			if f != nil {
				pprof.StopCPUProfile()
				_ = f.Close()
			}
			return
		case s := <-sig:
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				var err error
				if f, err = os.Create(cpuOut); err != nil {
					log.Error("creating cpu profile", "err", err)
					f = nil
					continue
				}
				if err := writeAllocs(allocOut + ".base"); err != nil {
					log.Error("writing allocation profile", "err", err)
				}
				runtime.ReadMemStats(&before)
				started = time.Now()
				if err := pprof.StartCPUProfile(f); err != nil {
					log.Error("starting cpu profile", "err", err)
					_ = f.Close()
					f = nil
				}
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				_ = f.Close()
				f = nil
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				if err := writeAllocs(allocOut); err != nil {
					log.Error("writing allocation profile", "err", err)
				}
				_ = json.NewEncoder(os.Stdout).Encode(Window{
					Seconds:    time.Since(started).Seconds(),
					Mallocs:    after.Mallocs - before.Mallocs,
					AllocBytes: after.TotalAlloc - before.TotalAlloc,
					GCCycles:   after.NumGC - before.NumGC,
					HeapInuse:  after.HeapInuse,
				})
			}
		}
	}
}

func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
