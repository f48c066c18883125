package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// notifyChannel is the LISTEN/NOTIFY channel on which a new map version
// is announced; the payload is the keyspace.
const notifyChannel = "scaleout_shard_map"

// metaSchema creates the metadata tables. It runs under an advisory lock
// so that concurrent OpenStore calls do not race on CREATE.
const metaSchema = `
CREATE TABLE IF NOT EXISTS scaleout_shard_maps (
	keyspace   text        NOT NULL,
	version    bigint      NOT NULL,
	doc        jsonb       NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (keyspace, version)
);
CREATE TABLE IF NOT EXISTS scaleout_shard_tables (
	keyspace      text NOT NULL,
	name          text NOT NULL,
	key_column    text NOT NULL,
	bucket_column text NOT NULL,
	PRIMARY KEY (keyspace, name)
);
CREATE TABLE IF NOT EXISTS scaleout_shard_rebalances (
	id         bigserial   PRIMARY KEY,
	keyspace   text        NOT NULL,
	state      text        NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS scaleout_shard_moves (
	rebalance_id bigint NOT NULL REFERENCES scaleout_shard_rebalances (id),
	seq          int    NOT NULL,
	bucket       int    NOT NULL,
	src          text   NOT NULL,
	dst          text   NOT NULL,
	phase        text   NOT NULL,
	rows_copied  bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (rebalance_id, seq)
);
CREATE TABLE IF NOT EXISTS scaleout_shard_directory (
	keyspace text NOT NULL,
	key      text NOT NULL,
	shard    text NOT NULL,
	PRIMARY KEY (keyspace, key)
);
CREATE TABLE IF NOT EXISTS scaleout_shard_directory_load (
	keyspace text   NOT NULL,
	shard    text   NOT NULL,
	keys     bigint NOT NULL,
	PRIMARY KEY (keyspace, shard)
);`

// Table is a table whose rows are placed by a keyspace: every row lives
// on the shard of its KeyColumn, and for a hash keyspace BucketColumn
// holds the row's bucket (Router.Bucket of the key, which the app writes
// with the row). The table must exist with the same columns on every
// shard, with an index on BucketColumn for moves to be quick.
type Table struct {
	// Name is the table, optionally schema-qualified ("app.orders").
	Name string
	// KeyColumn is the column holding the shard key.
	KeyColumn string
	// BucketColumn is the integer column holding the row's bucket.
	BucketColumn string
}

// Store is the metadata database: maps with their versions, registered
// tables, the rebalance journal and directory entries. It is safe for
// concurrent use.
type Store struct {
	pool *pgxpool.Pool
	dsn  string
}

// OpenStore connects to the metadata database at dsn and creates its
// tables if they are missing.
func OpenStore(ctx context.Context, dsn string) (*Store, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("shard: metadata database: %w", err)
	}
	s := &Store{pool: pool, dsn: dsn}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('scaleout_shard_schema'))`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, metaSchema)
		return err
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("shard: creating metadata tables: %w", err)
	}
	return s, nil
}

// Close closes the Store's connections.
func (s *Store) Close() { s.pool.Close() }

// CreateKeyspace stores m as its keyspace's first version. It fails if
// the keyspace exists.
func (s *Store) CreateKeyspace(ctx context.Context, m *Map) error {
	m = m.clone()
	m.Version = 1
	if err := m.Validate(); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := insertMap(ctx, tx, m)
		if errors.Is(err, ErrConflict) {
			return fmt.Errorf("shard: keyspace %q exists", m.Keyspace)
		}
		return err
	})
}

// Map returns the keyspace's latest map.
func (s *Store) Map(ctx context.Context, keyspace string) (*Map, error) {
	return loadMap(ctx, s.pool, keyspace)
}

// Version returns the keyspace's latest version number (0 if unknown):
// the cheap query nodes poll.
func (s *Store) Version(ctx context.Context, keyspace string) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM scaleout_shard_maps WHERE keyspace = $1`, keyspace).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("shard: map version of %q: %w", keyspace, err)
	}
	return v, nil
}

// Publish stores m as the next version of its keyspace, which must be the
// latest version plus one, and announces it to every Router. It returns
// ErrConflict if another version was published since m's base.
func (s *Store) Publish(ctx context.Context, m *Map) error {
	if err := m.Validate(); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return insertMap(ctx, tx, m) })
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func loadMap(ctx context.Context, q querier, keyspace string) (*Map, error) {
	var doc []byte
	err := q.QueryRow(ctx, `SELECT doc FROM scaleout_shard_maps WHERE keyspace = $1 ORDER BY version DESC LIMIT 1`, keyspace).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKeyspace, keyspace)
	}
	if err != nil {
		return nil, fmt.Errorf("shard: loading map of %q: %w", keyspace, err)
	}
	m := new(Map)
	if err := json.Unmarshal(doc, m); err != nil {
		return nil, fmt.Errorf("shard: decoding map of %q: %w", keyspace, err)
	}
	return m, nil
}

// insertMap inserts m (whose Version must be new) and notifies, in tx.
func insertMap(ctx context.Context, tx pgx.Tx, m *Map) error {
	if m.Version > 1 {
		var latest int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM scaleout_shard_maps WHERE keyspace = $1`, m.Keyspace).Scan(&latest); err != nil {
			return fmt.Errorf("shard: publishing map: %w", err)
		}
		if latest != m.Version-1 {
			return fmt.Errorf("%w: keyspace %q is at version %d, map is version %d", ErrConflict, m.Keyspace, latest, m.Version)
		}
	}
	doc, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("shard: encoding map: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO scaleout_shard_maps (keyspace, version, doc) VALUES ($1, $2, $3)`, m.Keyspace, m.Version, doc)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return fmt.Errorf("%w: version %d of %q exists", ErrConflict, m.Version, m.Keyspace)
	}
	if err != nil {
		return fmt.Errorf("shard: publishing map: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, m.Keyspace); err != nil {
		return fmt.Errorf("shard: announcing map: %w", err)
	}
	return nil
}

// RegisterTable records t as placed by keyspace, so that Rebalance moves
// its rows. Registering a table again updates its columns.
func (s *Store) RegisterTable(ctx context.Context, keyspace string, t Table) error {
	if t.Name == "" || t.KeyColumn == "" || t.BucketColumn == "" {
		return fmt.Errorf("shard: RegisterTable %q: Name, KeyColumn and BucketColumn are required", t.Name)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO scaleout_shard_tables (keyspace, name, key_column, bucket_column) VALUES ($1, $2, $3, $4)
		ON CONFLICT (keyspace, name) DO UPDATE SET key_column = excluded.key_column, bucket_column = excluded.bucket_column`,
		keyspace, t.Name, t.KeyColumn, t.BucketColumn)
	if err != nil {
		return fmt.Errorf("shard: registering table %q: %w", t.Name, err)
	}
	return nil
}

// Tables returns the tables registered for keyspace, by name.
func (s *Store) Tables(ctx context.Context, keyspace string) ([]Table, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, key_column, bucket_column FROM scaleout_shard_tables WHERE keyspace = $1 ORDER BY name`, keyspace)
	if err != nil {
		return nil, fmt.Errorf("shard: listing tables: %w", err)
	}
	var ts []Table
	for rows.Next() {
		var t Table
		if err := rows.Scan(&t.Name, &t.KeyColumn, &t.BucketColumn); err != nil {
			return nil, fmt.Errorf("shard: listing tables: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("shard: listing tables: %w", err)
	}
	return ts, nil
}

// ident quotes a possibly schema-qualified name as an SQL identifier.
func ident(name string) string {
	return pgx.Identifier(strings.Split(name, ".")).Sanitize()
}

// literal quotes s as an SQL string literal.
func literal(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// Prune deletes the keyspace's map versions older than the latest keep
// (at least 1), which every map change leaves behind (a rebalance adds
// about three per batch). Routers only read the latest.
func (s *Store) Prune(ctx context.Context, keyspace string, keep int) (int64, error) {
	keep = max(keep, 1)
	tag, err := s.pool.Exec(ctx, `DELETE FROM scaleout_shard_maps WHERE keyspace = $1 AND version <= (SELECT max(version) FROM scaleout_shard_maps WHERE keyspace = $1) - $2`, keyspace, keep)
	if err != nil {
		return 0, fmt.Errorf("shard: pruning maps of %q: %w", keyspace, err)
	}
	return tag.RowsAffected(), nil
}
