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
