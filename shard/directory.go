package shard

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// place returns the shard of k in a directory keyspace: from the cache,
// else from the metadata database, else by placing it on the shard with
// the fewest keys. Placement is one transaction whose INSERT … ON CONFLICT
// DO NOTHING makes a concurrent placement of the same key (by any process)
// wait for the first and then read its answer, so every node agrees.
func (r *Router) place(ctx context.Context, t *table, k Key) (string, error) {
	key := k.String()
	if v, ok := r.dir.Load(key); ok {
		return v.(string), nil
	}
	names := make([]string, len(t.m.Shards))
	for i, s := range t.m.Shards {
		names[i] = s.Name
	}
	name, err := r.store.Place(ctx, t.m.Keyspace, key, names)
	if err != nil {
		return "", err
	}
	r.dir.Store(key, name)
	return name, nil
}

// Place returns the shard of key in a directory keyspace, placing an
// unknown key on the least-loaded of shards (fewest keys; ties by name)
// and recording it, atomically: every caller, in any process, gets the
// same answer for the same key.
func (s *Store) Place(ctx context.Context, keyspace, key string, shards []string) (string, error) {
	var got string
	err := s.pool.QueryRow(ctx, `SELECT shard FROM scaleout_shard_directory WHERE keyspace = $1 AND key = $2`, keyspace, key).Scan(&got)
	if err == nil {
		return got, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("shard: directory lookup of %q: %w", key, err)
	}
	placed := false
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO scaleout_shard_directory_load (keyspace, shard, keys)
			SELECT $1, unnest($2::text[]), 0 ON CONFLICT DO NOTHING`, keyspace, shards); err != nil {
			return err
		}
		var pick string
		if err := tx.QueryRow(ctx, `SELECT shard FROM scaleout_shard_directory_load WHERE keyspace = $1 AND shard = ANY($2)
			ORDER BY keys, shard LIMIT 1`, keyspace, shards).Scan(&pick); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `INSERT INTO scaleout_shard_directory (keyspace, key, shard) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING RETURNING shard`, keyspace, key, pick).Scan(&got)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // placed by someone else meanwhile: read it below
		}
		if err != nil {
			return err
		}
		placed = true
		_, err = tx.Exec(ctx, `UPDATE scaleout_shard_directory_load SET keys = keys + 1 WHERE keyspace = $1 AND shard = $2`, keyspace, pick)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("shard: placing key %q: %w", key, err)
	}
	if placed {
		return got, nil
	}
	if err := s.pool.QueryRow(ctx, `SELECT shard FROM scaleout_shard_directory WHERE keyspace = $1 AND key = $2`, keyspace, key).Scan(&got); err != nil {
		return "", fmt.Errorf("shard: directory lookup of %q: %w", key, err)
	}
	return got, nil
}

// Assign records key on shard in a directory keyspace, replacing any
// previous entry. It moves no rows: use it for keys without data yet.
// Routers that cached the old entry keep it until they restart.
func (s *Store) Assign(ctx context.Context, keyspace, key, shard string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var old string
		err := tx.QueryRow(ctx, `SELECT shard FROM scaleout_shard_directory WHERE keyspace = $1 AND key = $2 FOR UPDATE`, keyspace, key).Scan(&old)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if err == nil {
			if _, err := tx.Exec(ctx, `UPDATE scaleout_shard_directory_load SET keys = keys - 1 WHERE keyspace = $1 AND shard = $2`, keyspace, old); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO scaleout_shard_directory (keyspace, key, shard) VALUES ($1, $2, $3)
			ON CONFLICT (keyspace, key) DO UPDATE SET shard = excluded.shard`, keyspace, key, shard); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO scaleout_shard_directory_load (keyspace, shard, keys) VALUES ($1, $2, 1)
			ON CONFLICT (keyspace, shard) DO UPDATE SET keys = scaleout_shard_directory_load.keys + 1`, keyspace, shard)
		return err
	})
	if err != nil {
		return fmt.Errorf("shard: assigning key %q: %w", key, err)
	}
	return nil
}
