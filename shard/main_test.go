package shard

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/scaleout/scaleout/replica"
)

// adminDSN is the PostgreSQL server the tests create their databases on.
const adminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// nShards is how many shard databases the tests share.
const nShards = 9

// fixture is the set of throw-away databases (one metadata database and
// nShards shard databases) the tests share; each test uses its own
// keyspace and tables. Created on first use, dropped by TestMain.
var fixture struct {
	once   sync.Once
	err    error
	names  []string
	meta   string
	shards []string
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(directoryChild())
	}
	code := m.Run()
	dropFixture()
	os.Exit(code)
}

func dsnFor(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:5432/%s?sslmode=disable", db)
}

// databases returns the metadata DSN and the shard DSNs.
func databases(tb testing.TB) (string, []string) {
	tb.Helper()
	fixture.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminDSN)
		if err != nil {
			fixture.err = err
			return
		}
		defer conn.Close(ctx)
		prefix := fmt.Sprintf("shard_test_%08x", rand.Uint32())
		for i := 0; i <= nShards; i++ {
			name := fmt.Sprintf("%s_%d", prefix, i)
			if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
				fixture.err = err
				return
			}
			fixture.names = append(fixture.names, name)
			if i == 0 {
				fixture.meta = dsnFor(name)
			} else {
				fixture.shards = append(fixture.shards, dsnFor(name))
			}
		}
	})
	if fixture.err != nil {
		tb.Fatalf("creating test databases: %v", fixture.err)
	}
	return fixture.meta, fixture.shards
}

func dropFixture() {
	if len(fixture.names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dropping test databases:", err)
		return
	}
	defer conn.Close(ctx)
	for _, name := range fixture.names {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			fmt.Fprintln(os.Stderr, "dropping test database:", err)
		}
	}
}

// keyspaceName returns a keyspace name unique to the test.
func keyspaceName(t testing.TB) string {
	s := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '_'
	}, t.Name())
	return fmt.Sprintf("%s_%04x", s, rand.Uint32()&0xffff)
}

// specs returns ShardSpecs s0..s(n-1) over the first n shard databases.
func specs(shards []string, n int) []ShardSpec {
	out := make([]ShardSpec, n)
	for i := range n {
		out[i] = ShardSpec{Name: fmt.Sprintf("s%d", i), Nodes: []string{shards[i]}}
	}
	return out
}

var quiet = slog.New(slog.DiscardHandler)

func clusterConfig() replica.Config {
	return replica.Config{MaxConns: 4, CheckInterval: 200 * time.Millisecond, Logger: quiet}
}

// newRouter opens a Router on keyspace, closed at cleanup.
func newRouter(tb testing.TB, meta, keyspace string) *Router {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := New(ctx, Config{MetaDSN: meta, Keyspace: keyspace, PollInterval: 200 * time.Millisecond, Cluster: clusterConfig(), Logger: quiet})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(r.Close)
	return r
}

// openStore opens the metadata store, closed at cleanup.
func openStore(tb testing.TB, meta string) *Store {
	tb.Helper()
	s, err := OpenStore(context.Background(), meta)
	if err != nil {
		tb.Fatalf("OpenStore: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// execAll runs sql on every DSN.
func execAll(tb testing.TB, dsns []string, sql string) {
	tb.Helper()
	ctx := context.Background()
	for _, dsn := range dsns {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			tb.Fatal(err)
		}
		_, err = conn.Exec(ctx, sql)
		conn.Close(ctx)
		if err != nil {
			tb.Fatalf("%s: %v", sql, err)
		}
	}
}
