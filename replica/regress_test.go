package replica

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestDroppedConnectionDoesNotStopWrites: a pooled connection to the
// primary terminated by pg_terminate_backend is a lost connection, not a
// lost node. At most the statements that ran on the killed connections
// fail (with their own error); no write is refused with ErrNoPrimary and the
// primary stays healthy.
func TestDroppedConnectionDoesNotStopWrites(t *testing.T) {
	pg := sharedPG(t)
	ctx := context.Background()
	const app, conns = "replica_dropped_conn_test", 4
	c := open(t, Config{
		Nodes:         pg.DSNs(),
		CheckInterval: time.Second, // the default: an outage would last until the next check
		MaxConns:      conns,
		ConfigurePool: func(pc *pgxpool.Config) { pc.ConnConfig.RuntimeParams["application_name"] = app },
	})
	if _, err := c.Exec(ctx, "create table if not exists dropped_conn (id bigserial primary key, v int)"); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, pg.DSN(0))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)

	for _, tc := range []struct {
		name  string
		which string // which of the app's backends to terminate
	}{
		{"one idle connection", "limit 1"},
		{"every connection of the app", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Open all the pool's connections to the primary.
			var txs []pgx.Tx
			for range conns {
				tx, err := c.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				txs = append(txs, tx)
			}
			for _, tx := range txs {
				if err := tx.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
			}
			var killed int
			err := admin.QueryRow(ctx, `select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
				where application_name = $1 and state = 'idle' `+tc.which+`) k`, app).Scan(&killed)
			if err != nil || killed == 0 {
				t.Fatalf("terminating the app's connections: %d killed, err %v", killed, err)
			}
			var failed, noPrimary int
			var first error
			for i := range 40 {
				_, err := c.Exec(ctx, "insert into dropped_conn (v) values ($1)", i)
				if err != nil {
					failed++
					if first == nil {
						first = err
					}
					if errors.Is(err, ErrNoPrimary) {
						noPrimary++
					}
				}
			}
			t.Logf("%d backends terminated; %d of 40 writes failed (%d with ErrNoPrimary); first: %v", killed, failed, noPrimary, first)
			if noPrimary != 0 {
				t.Fatalf("%d writes refused with ErrNoPrimary after a dropped connection; first error: %v", noPrimary, first)
			}
			if failed > killed {
				t.Fatalf("%d writes failed after %d connections were terminated, want at most one per connection; first: %v", failed, killed, first)
			}
			if st := c.Status(); st.Primary == "" {
				t.Fatalf("no primary after a dropped connection: %+v", st)
			}
			if _, err := c.Exec(ctx, "insert into dropped_conn (v) values (-1)"); err != nil {
				t.Fatalf("write after the dropped connections: %v", err)
			}
		})
	}
}

// longInList returns a SELECT with an IN list of n numbers.
func longInList(n int) string {
	var b strings.Builder
	b.WriteString("select id, name, email from users where id in (")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("1000")
		b.WriteString(string(rune('0' + i%10)))
	}
	b.WriteString(") order by id")
	return b.String()
}

// BenchmarkLongStatement measures routing a statement longer than a
// parameterised one usually is (an inlined IN list), cached and not.
func BenchmarkLongStatement(b *testing.B) {
	for _, n := range []int{700, 4000} {
		sql := longInList(n)
		b.Run("uncached/"+strconv.Itoa(len(sql))+"B", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				IsReadOnly(sql)
			}
		})
		b.Run("cached/"+strconv.Itoa(len(sql))+"B", func(b *testing.B) {
			var sc stmtCache
			b.ReportAllocs()
			for b.Loop() {
				if !sc.readOnly(sql) {
					b.Fatal("IN list is not read-only")
				}
			}
		})
	}
}

// TestLongStatementsCached: statements longer than stmtCacheKeyLen are
// classified once and then answered from the cache by their hash, without
// keeping their text, without allocating, and without mixing up two long
// statements of the same length.
func TestLongStatementsCached(t *testing.T) {
	in := longInList(700)
	write := strings.Replace(in, "select id, name, email from users", "delete from users where true or", 1)
	tests := []struct {
		name string
		sql  string
		want bool
	}{
		{"long IN list", in, true},
		{"long delete", write, false},
		{"same length, one byte apart", in[:len(in)-1] + "x", true},
		{"long delete at the end", in + "; delete from users", false},
		{"long function call that writes", in + " limit (select nextval('s'))", false},
	}
	var sc stmtCache
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.sql) <= stmtCacheKeyLen {
				t.Fatalf("statement of %d bytes is not long", len(tc.sql))
			}
			if got := IsReadOnly(tc.sql); got != tc.want {
				t.Fatalf("IsReadOnly = %v, want %v", got, tc.want)
			}
			before := sc.n.Load()
			for range 3 {
				if got := sc.readOnly(tc.sql); got != tc.want {
					t.Fatalf("cached readOnly = %v, want %v", got, tc.want)
				}
			}
			if got := sc.n.Load() - before; got != 1 {
				t.Fatalf("cache entries grew by %d, want 1", got)
			}
		})
	}
	if n := testing.AllocsPerRun(100, func() { sc.readOnly(in) }); n != 0 {
		t.Fatalf("cached lookup of a long statement allocates %v times", n)
	}
	// Bounded: many distinct long statements never hold more than
	// stmtCacheEntries entries.
	for i := range stmtCacheEntries + 100 {
		sc.readOnly(in + " -- " + strconv.Itoa(i))
	}
	sc.mu.RLock()
	long := len(sc.long)
	sc.mu.RUnlock()
	if long > stmtCacheEntries || sc.n.Load() > stmtCacheEntries {
		t.Fatalf("cache holds %d long statements (%d counted), want at most %d", long, sc.n.Load(), stmtCacheEntries)
	}
	if !sc.readOnly(in) || sc.readOnly(write) {
		t.Fatal("the cache answers wrongly after an eviction")
	}
}

// TestOpenCancelledContext: Open with a context already done fails with
// the context's error rather than opening a Cluster that knows no node.
func TestOpenCancelledContext(t *testing.T) {
	pg := sharedPG(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"deadline passed", expired, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Open(tc.ctx, Config{Nodes: pg.DSNs()})
			if err == nil {
				c.Close()
				t.Fatal("Open with a done context returned no error")
			}
			if !errors.Is(err, tc.want) || c != nil {
				t.Fatalf("Open = %v, %v; want nil and an error wrapping %v", c, err, tc.want)
			}
		})
	}
}

// TestSameServerListedTwice: one server listed twice in Config.Nodes under
// two spellings of its address is one primary, not two; under two database
// names, writes are refused with a message saying what is wrong.
func TestSameServerListedTwice(t *testing.T) {
	pg := sharedPG(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.DSN(0))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	const otherDB = "replica_same_server_test"
	var exists bool
	if err := admin.QueryRow(ctx, "select exists (select from pg_database where datname = $1)", otherDB).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		if _, err := admin.Exec(ctx, "create database "+otherDB); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), pg.DSN(0))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "drop database if exists "+otherDB+" with (force)"); err != nil {
			t.Error(err)
		}
	})
	localhost := strings.Replace(pg.DSN(0), "127.0.0.1", "localhost", 1)
	otherDSN := strings.Replace(pg.DSN(0), "/postgres?", "/"+otherDB+"?", 1)
	if localhost == pg.DSN(0) || otherDSN == pg.DSN(0) {
		t.Fatalf("cannot respell %q", pg.DSN(0))
	}

	tests := []struct {
		name      string
		nodes     []string
		wantWrite bool   // writes go through
		wantMsg   string // else, in the ErrNoPrimary error
	}{
		{"127.0.0.1 and localhost", []string{pg.DSN(0), localhost, pg.DSN(1)}, true, ""},
		{"two databases", []string{pg.DSN(0), pg.DSN(1), otherDSN}, false,
			"Config.Nodes[0] (127.0.0.1:" + strconv.Itoa(pg.Port(0)) + "/postgres) and Config.Nodes[2]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := open(t, Config{Nodes: tc.nodes})
			_, err := c.Exec(ctx, "select 1")
			if tc.wantWrite {
				if err != nil {
					t.Fatalf("write with the primary listed twice: %v", err)
				}
				if st := c.Status(); st.Primary == "" {
					t.Fatalf("no primary: %+v", st)
				}
				return
			}
			if !errors.Is(err, ErrNoPrimary) || !strings.Contains(err.Error(), tc.wantMsg) ||
				!strings.Contains(err.Error(), "same server") || !strings.Contains(err.Error(), "listed twice in Config.Nodes") {
				t.Fatalf("write = %v; want ErrNoPrimary saying %q is the same server listed twice", err, tc.wantMsg)
			}
		})
	}
}

// TestAdminFunctionsGoToPrimary: a SELECT calling an administration
// function that acts on the server it runs on is not read-only, so it runs
// on the primary rather than on whichever replica the rotation picks.
func TestAdminFunctionsGoToPrimary(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		run  bool // safe to run against the shared cluster
	}{
		{"pg_terminate_backend", "select inet_server_port(), pg_terminate_backend(0)", true},
		{"pg_cancel_backend", "select inet_server_port(), pg_cancel_backend(0)", true},
		{"pg_reload_conf", "select inet_server_port(), pg_reload_conf()", true},
		{"set_config", "select inet_server_port(), set_config('application_name', 'x', true)", true},
		{"upper case", "SELECT inet_server_port(), PG_RELOAD_CONF()", true},
		{"pg_stat_reset", "select pg_stat_reset()", false},
		{"pg_stat_reset_shared", "select pg_stat_reset_shared('bgwriter')", false},
		{"pg_wal_replay_pause", "select pg_wal_replay_pause()", false},
		{"pg_wal_replay_resume", "select pg_wal_replay_resume()", false},
		{"pg_rotate_logfile", "select pg_rotate_logfile()", false},
		{"pg_promote", "select pg_promote()", false},
		{"pg_log_backend_memory_contexts", "select pg_log_backend_memory_contexts(1)", false},
	}
	pg := sharedPG(t)
	c, primary := open(t, Config{Nodes: pg.DSNs()}), pg.Port(0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if IsReadOnly(tc.sql) {
				t.Fatalf("IsReadOnly(%q) = true, want false", tc.sql)
			}
			if !tc.run {
				return
			}
			var port int
			var ignored any
			if err := c.QueryRow(context.Background(), tc.sql).Scan(&port, &ignored); err != nil {
				t.Fatal(err)
			}
			if port != primary {
				t.Fatalf("%q ran on port %d, want the primary %d", tc.sql, port, primary)
			}
		})
	}
}

// TestDroppedConnectionSuspectReplicaLastResort: while a replica whose
// connection was lost is being checked, reads go to another replica if
// there is one, and to it rather than nowhere if there is not.
func TestDroppedConnectionSuspectReplicaLastResort(t *testing.T) {
	for _, balance := range []Balance{RoundRobin, LeastLatency} {
		t.Run(balance.String(), func(t *testing.T) {
			c := &Cluster{cfg: Config{Balance: balance, NoFallback: true}.withDefaults()}
			p, r1, r2 := &node{addr: "p"}, &node{addr: "r1"}, &node{addr: "r2"}
			c.route.Store(&routing{primary: p, rotation: []*node{r1, r2}})
			r1.suspect.Store(true)
			for range 10 {
				if n, err := c.readNode(context.Background(), nil); n != r2 || err != nil {
					t.Fatalf("read went to %v (err %v), want r2 while r1 is suspect", n, err)
				}
			}
			r2.down.Store(true)
			if n, err := c.readNode(context.Background(), nil); n != r1 || err != nil {
				t.Fatalf("read went to %v (err %v), want the suspect r1 as the last replica", n, err)
			}
		})
	}
}
