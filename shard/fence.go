package shard

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/jackc/pgx/v5"
	"github.com/scaleout/scaleout/replica"
)

// SQLSTATEs raised by the capture trigger on a shard.
const (
	codeFrozen = "SH001" // bucket in a move's cutover: retry shortly
	codeMoved  = "SH002" // bucket moved to another shard: reload the map
)

// Fence states of a bucket on a shard (scaleout_shard_fence.state).
const (
	fenceMoving = "moving" // writes are logged to scaleout_shard_changes
	fenceFrozen = "frozen" // writes are refused (SH001)
	fenceMoved  = "moved"  // writes are refused (SH002): the bucket lives elsewhere
)

// shardSchema is installed on every shard of a keyspace that a rebalance
// touches: the fences (bucket states) and the change log that each
// table's capture trigger (captureFunction) consults and fills. The
// rebalancer's own statements set scaleout.shard_mover and pass.
const shardSchema = `
CREATE TABLE IF NOT EXISTS scaleout_shard_fence (
	keyspace text NOT NULL,
	bucket   int  NOT NULL,
	state    text NOT NULL,
	PRIMARY KEY (keyspace, bucket)
);
CREATE TABLE IF NOT EXISTS scaleout_shard_changes (
	id       bigserial PRIMARY KEY,
	keyspace text   NOT NULL,
	tbl      text   NOT NULL,
	bucket   int    NOT NULL,
	key      text   NOT NULL
);
CREATE INDEX IF NOT EXISTS scaleout_shard_changes_bucket ON scaleout_shard_changes (keyspace, bucket, id);`

// shardFunction is called by each table's capture trigger for a row
// whose bucket has a fence: it logs the key of a moving bucket and
// refuses writes to a frozen or moved one.
const shardFunction = `
CREATE OR REPLACE FUNCTION scaleout_shard_fenced(st text, ks text, tbl text, b int, k text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
	IF st = 'moving' THEN
		INSERT INTO scaleout_shard_changes (keyspace, tbl, bucket, key) VALUES (ks, tbl, b, k);
	ELSIF st = 'frozen' THEN
		RAISE EXCEPTION 'shard: bucket % of keyspace % is in a move''s cutover; retry', b, ks USING ERRCODE = 'SH001';
	ELSIF st = 'moved' THEN
		RAISE EXCEPTION 'shard: bucket % of keyspace % moved to another shard; reload the map', b, ks USING ERRCODE = 'SH002';
	END IF;
END
$f$;`

// captureFunction returns the name and the definition of table t's
// capture trigger function, generated with its columns written out (a
// generic function reading columns by name through EXECUTE costs several
// times more per row). Without a fence on the row's bucket it costs one
// primary-key lookup per written row version.
func captureFunction(keyspace string, t Table) (name, def string) {
	name = fmt.Sprintf("scaleout_shard_capture_%016x", xxhash.Sum64String(keyspace+"\x00"+t.Name))
	ks, tbl := literal(keyspace), literal(t.Name)
	bcol, kcol := ident(t.BucketColumn), ident(t.KeyColumn)
	def = fmt.Sprintf(`CREATE OR REPLACE FUNCTION %[1]s() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
	st text;
BEGIN
	IF coalesce(current_setting('scaleout.shard_mover', true), '') = 'on' THEN
		IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
		RETURN NEW;
	END IF;
	IF TG_OP <> 'INSERT' THEN
		SELECT f.state INTO st FROM scaleout_shard_fence f WHERE f.keyspace = %[2]s AND f.bucket = OLD.%[4]s;
		IF st IS NOT NULL THEN
			PERFORM scaleout_shard_fenced(st, %[2]s, %[3]s, OLD.%[4]s, OLD.%[5]s::text);
		END IF;
	END IF;
	IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
	SELECT f.state INTO st FROM scaleout_shard_fence f WHERE f.keyspace = %[2]s AND f.bucket = NEW.%[4]s;
	IF st IS NOT NULL THEN
		PERFORM scaleout_shard_fenced(st, %[2]s, %[3]s, NEW.%[4]s, NEW.%[5]s::text);
	END IF;
	RETURN NEW;
END
$f$`, name, ks, tbl, bcol, kcol)
	return name, def
}

// prepareShard installs the fence tables, the trigger function and a
// trigger on every table, idempotently. What exists is left alone: CREATE
// INDEX IF NOT EXISTS and CREATE TRIGGER lock tables that live writers
// use, and doing both in one transaction could deadlock with them.
func prepareShard(ctx context.Context, db *replica.Cluster, keyspace string, tables []Table) error {
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('scaleout_shard_schema'))`); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('scaleout_shard_changes_bucket') IS NOT NULL AND to_regclass('scaleout_shard_fence') IS NOT NULL`).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := tx.Exec(ctx, shardSchema); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, shardFunction)
		return err
	})
	if err != nil {
		return fmt.Errorf("installing fence schema: %w", err)
	}
	for _, t := range tables {
		fn, def := captureFunction(keyspace, t)
		if _, err := db.Exec(ctx, def); err != nil {
			return fmt.Errorf("installing trigger function of %s: %w", t.Name, err)
		}
		call := fn + "()"
		var defs []string
		rows, err := db.Query(replica.Primary(ctx), `SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = 'scaleout_shard_capture'`, t.Name)
		if err == nil {
			defs, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			return fmt.Errorf("checking trigger on %s: %w", t.Name, err)
		}
		if len(defs) == 1 && strings.HasSuffix(defs[0], call) {
			continue
		}
		sql := fmt.Sprintf(`CREATE OR REPLACE TRIGGER scaleout_shard_capture BEFORE INSERT OR UPDATE OR DELETE ON %s
			FOR EACH ROW EXECUTE FUNCTION %s`, ident(t.Name), call)
		if _, err := db.Exec(ctx, sql); err != nil {
			return fmt.Errorf("installing trigger on %s: %w", t.Name, err)
		}
	}
	return nil
}

// setFence sets the buckets' fence state on a shard. With wait, it then
// waits for every transaction that had written to the tables before the
// fence committed (holding their RowExclusiveLock, as pg_locks shows) to
// end: afterwards no write that ran before the fence, and so did not see
// it, can still commit, and every later write sees it (under READ
// COMMITTED, each statement of the trigger takes a new snapshot). New
// writers are never blocked, and nothing conflicts with autovacuum. The
// wait is bounded by waitTimeout.
func setFence(ctx context.Context, db *replica.Cluster, keyspace string, tables []Table, buckets []int, state string, wait bool, waitTimeout time.Duration) error {
	if _, err := db.Exec(ctx, `INSERT INTO scaleout_shard_fence (keyspace, bucket, state) SELECT $1, unnest($2::int[]), $3
		ON CONFLICT (keyspace, bucket) DO UPDATE SET state = excluded.state`, keyspace, buckets, state); err != nil {
		return fmt.Errorf("setting buckets %v %s: %w", buckets, state, err)
	}
	if !wait || len(tables) == 0 {
		return nil
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Name
	}
	ctx = replica.Primary(ctx)
	rows, err := db.Query(ctx, `SELECT DISTINCT l.virtualtransaction FROM pg_locks l
		WHERE l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.relation = ANY (SELECT to_regclass(n)::oid FROM unnest($1::text[]) AS n)
		AND l.mode = 'RowExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid()`, names)
	if err != nil {
		return fmt.Errorf("listing in-flight writers: %w", err)
	}
	vxids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing in-flight writers: %w", err)
	}
	deadline := time.Now().Add(waitTimeout)
	for len(vxids) > 0 {
		var left []string
		rows, err := db.Query(ctx, `SELECT virtualxid FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY($1)`, vxids)
		if err == nil {
			left, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			return fmt.Errorf("waiting for in-flight writers: %w", err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("setting buckets %v %s: %d transactions that wrote before the fence still running after %s (%v)", buckets, state, len(left), waitTimeout, left)
		}
		vxids = left
		select {
		case <-time.After(2 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// clearFence removes the buckets' fences and change log on a shard.
func clearFence(ctx context.Context, db *replica.Cluster, keyspace string, buckets []int) error {
	if _, err := db.Exec(ctx, `DELETE FROM scaleout_shard_fence WHERE keyspace = $1 AND bucket = ANY($2)`, keyspace, buckets); err != nil {
		return fmt.Errorf("clearing fence of buckets %v: %w", buckets, err)
	}
	if _, err := db.Exec(ctx, `DELETE FROM scaleout_shard_changes WHERE keyspace = $1 AND bucket = ANY($2)`, keyspace, buckets); err != nil {
		return fmt.Errorf("clearing change log of buckets %v: %w", buckets, err)
	}
	return nil
}

// deleteBuckets deletes the buckets' rows from every table of a shard,
// bypassing the trigger.
func deleteBuckets(ctx context.Context, db *replica.Cluster, tables []Table, buckets []int) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL scaleout.shard_mover = 'on'`); err != nil {
			return err
		}
		for _, t := range tables {
			tag, err := tx.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s = ANY($1)", ident(t.Name), ident(t.BucketColumn)), buckets)
			if err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			}
			n += tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("deleting rows of buckets %v: %w", buckets, err)
	}
	return n, nil
}

// columns returns the quoted, comma-separated stored columns of table on db.
func columns(ctx context.Context, db *replica.Cluster, table string) (string, error) {
	var cols *string
	err := db.QueryRow(replica.Primary(ctx), `SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''`, table).Scan(&cols)
	if err != nil {
		return "", fmt.Errorf("columns of %s: %w", table, err)
	}
	if cols == nil {
		return "", fmt.Errorf("columns of %s: none", table)
	}
	return *cols, nil
}
