package shard

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Result is one shard's part of a scatter-gather.
type Result[T any] struct {
	// Shard is the shard's name.
	Shard string
	// Value is what the shard's function returned (its zero value if Err).
	Value T
	// Err is the shard's error (its timeout included), nil on success.
	Err error
}

// Gathered is the outcome of a scatter-gather: every shard's result, in
// the map's shard order.
type Gathered[T any] struct {
	Results []Result[T]
	// Partial is true when at least one shard failed: merged values then
	// cover only the shards without Err.
	Partial bool
}

// Err returns the shards' errors joined, each prefixed with its shard,
// or nil when every shard succeeded.
func (g Gathered[T]) Err() error {
	var errs []error
	for _, r := range g.Results {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("shard %q: %w", r.Shard, r.Err))
		}
	}
	return errors.Join(errs...)
}

// ScatterGather runs fn on every shard of r's current map concurrently,
// each bounded by Config.ShardTimeout, and returns every shard's result.
// A failed shard is reported in its Result and marks the whole Partial;
// the others are returned, never dropped.
func ScatterGather[T any](ctx context.Context, r *Router, fn func(ctx context.Context, s Shard) (T, error)) Gathered[T] {
	shards := r.cur.Load().shards
	g := Gathered[T]{Results: make([]Result[T], len(shards))}
	var wg sync.WaitGroup
	for i, s := range shards {
		g.Results[i].Shard = s.Name
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, r.cfg.ShardTimeout)
			defer cancel()
			g.Results[i].Value, g.Results[i].Err = fn(sctx, s)
		})
	}
	wg.Wait()
	for _, res := range g.Results {
		if res.Err != nil {
			g.Partial = true
			r.metrics.partials.Add(1)
			break
		}
	}
	return g
}

// All runs fn on every shard concurrently, as ScatterGather does.
func (r *Router) All(ctx context.Context, fn func(ctx context.Context, s Shard) error) Gathered[struct{}] {
	return ScatterGather(ctx, r, func(ctx context.Context, s Shard) (struct{}, error) {
		return struct{}{}, fn(ctx, s)
	})
}

// Concat merges by concatenating the successful shards' slices in shard
// order.
func Concat[T any](g Gathered[[]T]) []T {
	var out []T
	for _, r := range g.Results {
		if r.Err == nil {
			out = append(out, r.Value...)
		}
	}
	return out
}

// Sum merges by adding the successful shards' values (counts, sums).
func Sum[T cmp.Ordered](g Gathered[T]) T {
	var s T
	for _, r := range g.Results {
		if r.Err == nil {
			s += r.Value
		}
	}
	return s
}

// MergeOrdered merges the successful shards' slices, each already sorted
// by compare, into one sorted slice of at most limit elements (no limit
// when limit <= 0): the shard-wide ORDER BY … LIMIT when each shard ran
// the same ORDER BY … LIMIT.
func MergeOrdered[T any](g Gathered[[]T], compare func(a, b T) int, limit int) []T {
	var lists [][]T
	n := 0
	for _, r := range g.Results {
		if r.Err == nil && len(r.Value) > 0 {
			lists = append(lists, r.Value)
			n += len(r.Value)
		}
	}
	if limit > 0 {
		n = min(n, limit)
	}
	out := make([]T, 0, n)
	pos := make([]int, len(lists))
	for len(out) < n {
		best := -1
		for i, l := range lists {
			if pos[i] < len(l) && (best < 0 || compare(l[pos[i]], lists[best][pos[best]]) < 0) {
				best = i
			}
		}
		out = append(out, lists[best][pos[best]])
		pos[best]++
	}
	return slices.Clip(out)
}
