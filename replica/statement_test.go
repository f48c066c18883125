package replica

import (
	"fmt"
	"strings"
	"testing"
)

var readOnlyCases = []struct {
	name string
	sql  string
	want bool
}{
	{"select", "SELECT * FROM users WHERE id = $1", true},
	{"lower case with leading space and comment", "  -- who\n select 1", true},
	{"block comment first", "/* note */ select 1", true},
	{"nested block comment", "/* a /* b */ insert */ select 1", true},
	{"with", "WITH x AS (SELECT 1) SELECT * FROM x", true},
	{"values", "VALUES (1), (2)", true},
	{"table", "TABLE users", true},
	{"show", "SHOW server_version", true},
	{"explain", "EXPLAIN SELECT 1", true},
	{"explain options", "EXPLAIN (ANALYZE, FORMAT JSON) SELECT 1", true},
	{"explain analyze select", "explain analyze verbose select 1", true},
	{"parenthesised union", "(SELECT 1) UNION (SELECT 2)", true},
	{"trailing semicolon", "select 1;", true},
	{"two reads", "select 1; select 2", true},
	{"update in string", "select 'update t set x = 1' as s", true},
	{"escaped quote in string", "select 'it''s; delete from t' as s", true},
	{"E string with backslash quote", `select E'a\' delete from t' as s`, true},
	{"dollar quote", "select $$ insert into t $$ as s", true},
	{"tagged dollar quote", "select $fn$ for update $x$ $fn$ as s", true},
	{"quoted identifier named update", `select "update", "for" from t`, true},
	{"column named updated_at", "select updated_at, inserted_by from t order by deleted", true},
	{"substring for", "select substring(name for 3) from t", true},
	{"function like nextval_safe", "select nextvalue(1)", true},
	{"param", "select $1::int", true},
	{"advisory lock in comment", "select 1 -- pg_advisory_lock(1)", true},
	{"currval-like column", "select lo from t", true},

	{"empty", "", false},
	{"only comment", "-- nothing", false},
	{"insert", "INSERT INTO t VALUES (1)", false},
	{"update", "update t set x = 1", false},
	{"delete", "delete from t", false},
	{"merge", "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DO NOTHING", false},
	{"ddl", "create table t (id int)", false},
	{"set", "set search_path = x", false},
	{"begin", "begin", false},
	{"for update", "SELECT * FROM t WHERE id = 1 FOR UPDATE", false},
	{"for no key update", "select * from t for no key update", false},
	{"for share", "select * from t for share", false},
	{"for key share", "select * from t FOR KEY SHARE SKIP LOCKED", false},
	{"nextval", "SELECT nextval('seq')", false},
	{"nextval qualified", "select pg_catalog.nextval('seq')", false},
	{"nextval quoted", `select "nextval"('seq')`, false},
	{"nextval spaced", "select nextval /* x */ ('seq')", false},
	{"setval", "select setval('seq', 10)", false},
	{"advisory lock", "select pg_advisory_lock(42)", false},
	{"try advisory xact lock", "select PG_TRY_ADVISORY_XACT_LOCK(1)", false},
	{"current wal lsn", "select pg_current_wal_lsn()", false},
	{"txid_current", "select txid_current()", false},
	{"pg_notify", "select pg_notify('c', 'x')", false},
	{"large object", "select lo_create(0)", false},
	{"cte insert", "WITH n AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM n", false},
	{"cte delete", "with d as (delete from t returning *) select count(*) from d", false},
	{"select into", "SELECT * INTO new_t FROM t", false},
	{"explain analyze insert", "EXPLAIN ANALYZE INSERT INTO t VALUES (1)", false},
	{"explain analyze delete in parens options", "explain (analyze) delete from t", false},
	{"explain alone", "explain", false},
	{"read then write", "select 1; delete from t", false},
	{"write hidden after string", "select 'a'; insert into t values (1)", false},
	{"write after dollar quote", "select $$x$$; update t set a = 1", false},
	{"unterminated string", "select 'abc", false},
	{"unterminated comment", "select 1 /* x", false},
	{"unterminated dollar", "select $a$ x", false},
	{"unterminated identifier", `select "abc`, false},
	{"E string unterminated by escaped quote", `select E'abc\'`, false},
	{"lock statement", "LOCK TABLE t", false},
	{"call", "call p()", false},
	{"do", "do $$ begin end $$", false},
	{"copy", "copy t to stdout", false},
}

func TestIsReadOnly(t *testing.T) {
	for _, tc := range readOnlyCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsReadOnly(tc.sql); got != tc.want {
				t.Errorf("IsReadOnly(%q) = %v, want %v", tc.sql, got, tc.want)
			}
		})
	}
}

func TestIsReadOnlyDoesNotAllocate(t *testing.T) {
	sql := "with x as (select id, 'for update' from t where a = $1) select * from x /* c */"
	if n := testing.AllocsPerRun(100, func() { IsReadOnly(sql) }); n != 0 {
		t.Fatalf("IsReadOnly allocates %v times per call", n)
	}
}

// FuzzIsReadOnly checks, for any input, properties that must hold whatever
// the classifier decides: it does not panic; appending a write never makes
// text read-only; any text inside a string literal, a dollar quote or a
// quoted identifier is invisible to it.
func FuzzIsReadOnly(f *testing.F) {
	for _, tc := range readOnlyCases {
		f.Add(tc.sql)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ro := IsReadOnly(s)
		if ro && IsReadOnly(s+"\n; insert into t values (1)") {
			t.Fatalf("%q followed by an INSERT is read-only", s)
		}
		if ro && IsReadOnly(s+"\n for update") {
			t.Fatalf("%q followed by FOR UPDATE is read-only", s)
		}
		if ro && !IsReadOnly("/* c */ "+s+"\n-- c") {
			t.Fatalf("%q is read-only but not with comments around it", s)
		}
		lit := "'" + strings.ReplaceAll(s, "'", "''") + "'"
		if !IsReadOnly("select " + lit + " as v from t") {
			t.Fatalf("select of literal %s is not read-only", lit)
		}
		esc := "E'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
		if !IsReadOnly("select " + esc) {
			t.Fatalf("select of literal %s is not read-only", esc)
		}
		if !strings.Contains(s, "$q$") && !IsReadOnly("select $q$"+s+"$q$") {
			t.Fatalf("select of dollar-quoted %q is not read-only", s)
		}
		ident := `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
		if !IsReadOnly("select " + ident + " from t") {
			t.Fatalf("select of column %s is not read-only", ident)
		}
	})
}

func BenchmarkIsReadOnly(b *testing.B) {
	for _, sql := range []string{
		"select v from kv where id = $1",
		"WITH recent AS (SELECT id, payload FROM events WHERE created_at > now() - interval '1 hour') " +
			"SELECT r.id, u.name FROM recent r JOIN users u ON u.id = r.id /* report */ LIMIT 100",
	} {
		b.Run(strings.Fields(sql)[0], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				IsReadOnly(sql)
			}
		})
	}
}

func TestStmtCache(t *testing.T) {
	var sc stmtCache
	for range 3 {
		for _, tc := range readOnlyCases {
			if got := sc.readOnly(tc.sql); got != tc.want {
				t.Fatalf("cached readOnly(%q) = %v, want %v", tc.sql, got, tc.want)
			}
		}
	}
	if int(sc.n.Load()) != len(readOnlyCases) {
		t.Fatalf("cache holds %d statements, want %d", sc.n.Load(), len(readOnlyCases))
	}
	for i := range stmtCacheEntries + 10 {
		sc.readOnly(fmt.Sprintf("select %d", i))
	}
	if n := sc.n.Load(); n > stmtCacheEntries || n == 0 {
		t.Fatalf("cache holds %d statements, want 1 to %d", n, stmtCacheEntries)
	}
	if sc.readOnly("select 99999999") != true || sc.readOnly("delete from t where id = 99999999") != false {
		t.Fatal("a full cache answers wrongly")
	}
	if n := testing.AllocsPerRun(100, func() { sc.readOnly("select 1") }); n != 0 {
		t.Fatalf("cached lookup allocates %v times", n)
	}
}
