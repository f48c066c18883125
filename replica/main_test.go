package replica

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/scaleout/scaleout/internal/testenv"
)

// shared is the PostgreSQL cluster (primary and two replicas) that the
// tests of this package share. It starts on first use, so fuzzing workers
// and tests that need no server never start it, and TestMain closes it.
var shared struct {
	once sync.Once
	pg   *testenv.PostgresCluster
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.pg != nil {
		if err := shared.pg.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}

// sharedPG returns the shared cluster, starting it on first use.
func sharedPG(tb testing.TB) *testenv.PostgresCluster {
	tb.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.pg, shared.err = testenv.NewPostgresCluster(ctx, 2)
	})
	if shared.err != nil {
		tb.Fatalf("starting the shared PostgreSQL cluster: %v", shared.err)
	}
	return shared.pg
}

// open opens a Cluster over pg's nodes with fast checks, closed at cleanup.
func open(tb testing.TB, cfg Config) *Cluster {
	tb.Helper()
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 50 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nodeStatus returns the status of the node listening on port.
func nodeStatus(tb testing.TB, c *Cluster, port int) NodeStatus {
	tb.Helper()
	for _, n := range c.Status().Nodes {
		if n.Addr == fmt.Sprintf("127.0.0.1:%d/postgres", port) {
			return n
		}
	}
	tb.Fatalf("no node on port %d in %+v", port, c.Status())
	return NodeStatus{}
}
