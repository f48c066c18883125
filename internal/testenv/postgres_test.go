package testenv

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func queryInt(t *testing.T, dsn, sql string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// waitInt polls sql on dsn until it returns want.
func waitInt(t *testing.T, dsn, sql string, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got := queryInt(t, dsn, sql); got == want {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%s on %s = %d, want %d", sql, dsn, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPostgresCluster(t *testing.T) {
	ctx := context.Background()
	c := StartPostgresCluster(t, 1)
	dir := c.dir
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}

	t.Run("replica streams and is in recovery", func(t *testing.T) {
		if got := queryInt(t, c.DSN(0), "select pg_is_in_recovery()::int"); got != 0 {
			t.Fatalf("node 0 in recovery")
		}
		if got := queryInt(t, c.DSN(1), "select pg_is_in_recovery()::int"); got != 1 {
			t.Fatalf("node 1 not in recovery")
		}
		if err := c.exec(ctx, 0, "create table t (v int); insert into t values (1)"); err != nil {
			t.Fatal(err)
		}
		waitInt(t, c.DSN(1), "select count(*)::int from pg_class where relname = 't'", 1)
		waitInt(t, c.DSN(1), "select count(*)::int from t", 1)
	})

	t.Run("paused replay falls behind and catches up after resume", func(t *testing.T) {
		if err := c.PauseReplay(ctx, 1); err != nil {
			t.Fatal(err)
		}
		waitInt(t, c.DSN(1), "select (pg_get_wal_replay_pause_state() = 'paused')::int", 1)
		if err := c.exec(ctx, 0, "insert into t values (2)"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if got := queryInt(t, c.DSN(1), "select count(*)::int from t"); got != 1 {
			t.Fatalf("paused replica sees %d rows, want 1", got)
		}
		if err := c.ResumeReplay(ctx, 1); err != nil {
			t.Fatal(err)
		}
		waitInt(t, c.DSN(1), "select count(*)::int from t", 2)
	})

	t.Run("stop and start keep port and data", func(t *testing.T) {
		port := c.Port(1)
		if err := c.Stop(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if conn, err := pgx.Connect(ctx, c.DSN(1)); err == nil {
			conn.Close(ctx)
			t.Fatal("stopped node still accepts connections")
		}
		if err := c.Start(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if c.Port(1) != port {
			t.Fatalf("port changed from %d to %d", port, c.Port(1))
		}
		waitInt(t, c.DSN(1), "select count(*)::int from t", 2)
	})

	t.Run("kill then start recovers", func(t *testing.T) {
		if err := c.Kill(1); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitStreaming(ctx, 0, 1); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("promote makes the replica writable", func(t *testing.T) {
		if err := c.Stop(ctx, 0); err != nil {
			t.Fatal(err)
		}
		if err := c.Promote(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if err := c.exec(ctx, 1, "insert into t values (3)"); err != nil {
			t.Fatal(err)
		}
		if got := queryInt(t, c.DSN(1), "select count(*)::int from t"); got != 3 {
			t.Fatalf("promoted node has %d rows, want 3", got)
		}
	})

	t.Run("close removes everything", func(t *testing.T) {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("dir %s still exists: %v", dir, err)
		}
		if conn, err := pgx.Connect(ctx, c.DSN(1)); err == nil {
			conn.Close(ctx)
			t.Fatal("server still running after Close")
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}
