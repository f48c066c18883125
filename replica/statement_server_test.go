package replica

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestReadOnlyRuleOnReplica runs the classifier's cases on a real hot
// standby: every statement IsReadOnly accepts must run there (or fail only
// for a reason unrelated to being a standby, such as an unknown function),
// and the writing and locking ones it rejects do fail there.
func TestReadOnlyRuleOnReplica(t *testing.T) {
	pg := sharedPG(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := open(t, Config{Nodes: pg.DSNs()})
	if _, err := c.Exec(ctx, `create table if not exists t (id int, a int, x int, lo int, name text,
			updated_at timestamptz, inserted_by text, deleted bool, "update" int, "for" int);
		create table if not exists users (id int, name text);
		create table if not exists events (id int, payload text, created_at timestamptz);
		create sequence if not exists seq`); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the replica to replay the schema", func() bool {
		return nodeStatus(t, c, pg.Port(1)).LSN >= tok
	})
	conn, err := pgx.Connect(ctx, pg.DSN(1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	run := func(sql string) error {
		if strings.Contains(sql, "$1") {
			_, err := conn.Exec(ctx, sql, 1)
			return err
		}
		_, err := conn.PgConn().Exec(ctx, sql).ReadAll()
		return err
	}
	// Failures that mean "not on a standby": read-only transaction,
	// recovery in progress, not supported during recovery, and the
	// internal error lo_create raises ("cannot assign OIDs during
	// recovery").
	standbyRefusal := func(err error) bool {
		var pgErr *pgconn.PgError
		return errors.As(err, &pgErr) && (pgErr.Code == "25006" || pgErr.Code == "55000" || pgErr.Code == "0A000" || pgErr.Code == "XX000")
	}
	for _, tc := range readOnlyCases {
		if !tc.want || tc.sql == "" {
			continue
		}
		t.Run("accepted/"+tc.name, func(t *testing.T) {
			if err := run(tc.sql); standbyRefusal(err) {
				t.Fatalf("%q is classified read-only but the standby refuses it: %v", tc.sql, err)
			}
		})
	}
	for _, sql := range []string{
		"SELECT * FROM t WHERE id = 1 FOR UPDATE",
		"select * from t for share",
		"select * from t FOR KEY SHARE SKIP LOCKED",
		"SELECT nextval('seq')",
		"select setval('seq', 10)",
		"select pg_current_wal_lsn()",
		"select txid_current()",
		"select lo_create(0)",
		"WITH n AS (INSERT INTO t (id) VALUES (1) RETURNING id) SELECT * FROM n",
		"with d as (delete from t returning *) select count(*) from d",
		"SELECT * INTO new_t FROM t",
		"EXPLAIN ANALYZE INSERT INTO t (id) VALUES (1)",
	} {
		t.Run("rejected/"+sql, func(t *testing.T) {
			if IsReadOnly(sql) {
				t.Fatalf("%q is classified read-only", sql)
			}
			if err := run(sql); !standbyRefusal(err) {
				t.Fatalf("%q: the standby answered %v; want a read-only refusal (so it must go to the primary)", sql, err)
			}
		})
	}
}
