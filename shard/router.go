package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/scaleout/scaleout/replica"
)

// Config configures a Router. MetaDSN and Keyspace are required; the zero
// value of every other field means its documented default.
type Config struct {
	// MetaDSN is the connection string of the metadata database holding
	// the keyspace's maps (and directory).
	MetaDSN string
	// Keyspace names the keyspace to route.
	Keyspace string
	// PollInterval is how often the map version is checked, on top of
	// LISTEN/NOTIFY, which announces a new version at once. By default, 1s.
	PollInterval time.Duration
	// WriteHold bounds how long For waits while the key's bucket is frozen
	// for a move, and how long Do retries writes refused by a move, before
	// failing with ErrMoving. By default, 5s.
	WriteHold time.Duration
	// ShardTimeout bounds each shard's part of All and ScatterGather.
	// By default, 5s.
	ShardTimeout time.Duration
	// Cluster is the template of every shard's replica.Config; its Nodes
	// are replaced by the shard's. By default, replica's defaults.
	Cluster replica.Config
	// Logger receives map changes and watch errors. By default,
	// slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.WriteHold <= 0 {
		c.WriteHold = 5 * time.Second
	}
	if c.ShardTimeout <= 0 {
		c.ShardTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Cluster.Logger == nil {
		c.Cluster.Logger = c.Logger
	}
	return c
}

// Shard is one shard of the current map: its name and its replica cluster.
type Shard struct {
	// Name is the shard's name in the map.
	Name string
	// DB routes the shard's statements: writes to its primary, reads to
	// its replicas.
	DB *replica.Cluster
}

// Router routes keys of one keyspace to their shards' replica clusters,
// following every new map version without a restart. It is safe for
// concurrent use; routing reads an immutable table through an atomic
// pointer and does not lock.
type Router struct {
	cfg     Config
	store   *Store
	cur     atomic.Pointer[table]
	metrics *routerMetrics

	mu       sync.Mutex // guards clusters and refreshes
	clusters map[string]*clusterRef

	dir sync.Map // directory cache: key string -> shard name

	cancel context.CancelFunc
	done   chan struct{}
}

type clusterRef struct {
	nodes []string
	db    *replica.Cluster
}

// table is a compiled, immutable map.
type table struct {
	m      *Map
	shards []Shard
	byName map[string]int
	assign []uint16 // bucket -> index in shards
	frozen []bool   // bucket -> frozen
	ranges []int    // range -> index in shards
	next   chan struct{}
}

// New opens a Router over the keyspace's latest map and starts following
// new versions. Close it to release its connections.
func New(ctx context.Context, cfg Config) (*Router, error) {
	if cfg.MetaDSN == "" || cfg.Keyspace == "" {
		return nil, errors.New("shard: Config.MetaDSN and Config.Keyspace are required")
	}
	cfg = cfg.withDefaults()
	store, err := OpenStore(ctx, cfg.MetaDSN)
	if err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, store: store, clusters: map[string]*clusterRef{}, metrics: &routerMetrics{}, done: make(chan struct{})}
	m, err := store.Map(ctx, cfg.Keyspace)
	if err == nil {
		err = r.install(ctx, m)
	}
	if err != nil {
		store.Close()
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.watch(wctx)
	return r, nil
}

// Close stops following the map and closes every shard's cluster.
func (r *Router) Close() {
	r.cancel()
	<-r.done
	r.mu.Lock()
	for _, c := range r.clusters {
		c.db.Close()
	}
	r.clusters = nil
	r.mu.Unlock()
	r.store.Close()
}

// Store returns the Router's metadata store.
func (r *Router) Store() *Store { return r.store }

// Map returns a copy of the map the Router currently routes by.
func (r *Router) Map() *Map { return r.cur.Load().m.clone() }

// Version returns the version of the map the Router currently routes by.
func (r *Router) Version() int64 { return r.cur.Load().m.Version }

// Shards returns every shard of the current map.
func (r *Router) Shards() []Shard { return slices.Clone(r.cur.Load().shards) }

// Bucket returns the bucket of k in a hash keyspace (the value to store in
// a registered table's bucket column), or -1 for other strategies.
func (r *Router) Bucket(k Key) int {
	t := r.cur.Load()
	if t.m.Strategy != Hash {
		return -1
	}
	return BucketOf(k, len(t.assign))
}

// ShardOf returns the name of k's shard.
func (r *Router) ShardOf(ctx context.Context, k Key) (string, error) {
	t := r.cur.Load()
	i, _, err := r.locate(ctx, t, k)
	if err != nil {
		return "", err
	}
	return t.shards[i].Name, nil
}

// locate returns the shard index and bucket (-1 if none) of k in t.
func (r *Router) locate(ctx context.Context, t *table, k Key) (int, int, error) {
	switch t.m.Strategy {
	case Hash:
		b := int(k.Hash() % uint64(len(t.assign)))
		return int(t.assign[b]), b, nil
	case RangeStrategy:
		i := t.m.rangeIndex(k)
		if i < 0 {
			return 0, -1, fmt.Errorf("keyspace %q, key %s: %w", t.m.Keyspace, k, ErrOutOfRange)
		}
		return t.ranges[i], -1, nil
	default:
		name, err := r.place(ctx, t, k)
		if err != nil {
			return 0, -1, err
		}
		i, ok := t.byName[name]
		if !ok {
			return 0, -1, fmt.Errorf("shard: directory places key %s on shard %q, which is not in map version %d", k, name, t.m.Version)
		}
		return i, -1, nil
	}
}

// For returns the replica cluster of k's shard: writes go to its primary,
// reads to its replicas. While k's bucket is frozen for the cutover of a
// move, For waits (up to Config.WriteHold) for the new map, so that the
// write goes to the bucket's new shard; then it fails with ErrMoving.
func (r *Router) For(ctx context.Context, k Key) (*replica.Cluster, error) {
	var deadline *time.Timer
	for {
		t := r.cur.Load()
		i, b, err := r.locate(ctx, t, k)
		if err != nil {
			return nil, err
		}
		if b < 0 || !t.frozen[b] {
			return t.shards[i].DB, nil
		}
		if deadline == nil {
			r.metrics.holds.Add(1)
			deadline = time.NewTimer(r.cfg.WriteHold)
			defer deadline.Stop()
		}
		select {
		case <-t.next:
		case <-deadline.C:
			return nil, fmt.Errorf("keyspace %q bucket %d: %w", t.m.Keyspace, b, ErrMoving)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ForRead returns the replica cluster of k's shard without waiting for a
// move's cutover: for reads only.
func (r *Router) ForRead(ctx context.Context, k Key) (*replica.Cluster, error) {
	t := r.cur.Load()
	i, _, err := r.locate(ctx, t, k)
	if err != nil {
		return nil, err
	}
	return t.shards[i].DB, nil
}

// ForKeys returns the one shard holding every key, for a transaction that
// writes several keys; keys on different shards fail with ErrCrossShard
// and nothing is sent.
func (r *Router) ForKeys(ctx context.Context, keys ...Key) (*replica.Cluster, error) {
	if len(keys) == 0 {
		return nil, errors.New("shard: ForKeys without keys")
	}
	t := r.cur.Load()
	first := -1
	for _, k := range keys {
		i, _, err := r.locate(ctx, t, k)
		if err != nil {
			return nil, err
		}
		if first >= 0 && i != first {
			return nil, fmt.Errorf("%w: %s on %q, %s on %q", ErrCrossShard, keys[0], t.shards[first].Name, k, t.shards[i].Name)
		}
		first = i
	}
	// Wait out a cutover of any of the keys' buckets.
	for _, k := range keys {
		if _, err := r.For(ctx, k); err != nil {
			return nil, err
		}
	}
	if r.cur.Load() != t {
		return r.ForKeys(ctx, keys...)
	}
	return t.shards[first].DB, nil
}

// Do runs fn with k's shard (as For gives it) and, when fn fails because
// the shard refused a write to a bucket in a move's cutover or already
// moved away (IsMoved), reloads the map and runs fn again, until
// Config.WriteHold has passed. fn must be safe to run more than once: a
// refused write was not applied.
func (r *Router) Do(ctx context.Context, k Key, fn func(db *replica.Cluster) error) error {
	start := time.Now()
	backoff := 5 * time.Millisecond
	for {
		db, err := r.For(ctx, k)
		if err != nil {
			return err
		}
		err = fn(db)
		if !IsMoved(err) {
			return err
		}
		r.metrics.retries.Add(1)
		if time.Since(start) > r.cfg.WriteHold {
			return fmt.Errorf("%w: %w", ErrMoving, err)
		}
		if rerr := r.refresh(ctx); rerr != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

// IsMoved reports whether err is a shard's refusal of a write to a bucket
// that is frozen for a move or has moved to another shard (SQLSTATE SH001
// or SH002 from the rebalance trigger): the write was not applied, and
// retrying after the map changes sends it to the right shard.
func IsMoved(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == codeFrozen || pgErr.Code == codeMoved)
}

// refresh loads the latest map if it is newer than the current one.
func (r *Router) refresh(ctx context.Context) error {
	v, err := r.store.Version(ctx, r.cfg.Keyspace)
	if err != nil {
		return err
	}
	if v <= r.cur.Load().m.Version {
		return nil
	}
	m, err := r.store.Map(ctx, r.cfg.Keyspace)
	if err != nil {
		return err
	}
	return r.install(ctx, m)
}

// install compiles m, opens the clusters of new shards and swaps it in.
func (r *Router) install(ctx context.Context, m *Map) error {
	if err := m.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cur.Load()
	if old != nil && old.m.Version >= m.Version {
		return nil
	}
	if r.clusters == nil {
		return errors.New("shard: router closed")
	}
	t := &table{m: m, byName: make(map[string]int, len(m.Shards)), next: make(chan struct{})}
	for i, s := range m.Shards {
		ref := r.clusters[s.Name]
		if ref == nil || !slices.Equal(ref.nodes, s.Nodes) {
			cfg := r.cfg.Cluster
			cfg.Nodes = s.Nodes
			db, err := replica.Open(ctx, cfg)
			if err != nil {
				return fmt.Errorf("shard: opening shard %q: %w", s.Name, err)
			}
			if ref != nil {
				// The shard's nodes changed: statements still running on
				// the old cluster fail (ErrClosed) and their callers retry.
				ref.db.Close()
			}
			ref = &clusterRef{nodes: slices.Clone(s.Nodes), db: db}
			r.clusters[s.Name] = ref
		}
		t.shards = append(t.shards, Shard{Name: s.Name, DB: ref.db})
		t.byName[s.Name] = i
	}
	switch m.Strategy {
	case Hash:
		t.assign = make([]uint16, len(m.Buckets))
		t.frozen = make([]bool, len(m.Buckets))
		for b, name := range m.Buckets {
			t.assign[b] = uint16(t.byName[name])
		}
		for _, b := range m.Frozen {
			t.frozen[b] = true
		}
	case RangeStrategy:
		for _, rg := range m.Ranges {
			t.ranges = append(t.ranges, t.byName[rg.Shard])
		}
	}
	r.cur.Store(t)
	r.metrics.version.Store(m.Version)
	if old != nil {
		close(old.next)
		r.cfg.Logger.Info("shard: new map", "keyspace", m.Keyspace, "version", m.Version, "shards", len(m.Shards), "frozen", len(m.Frozen))
	}
	return nil
}

// watch follows new versions: LISTEN for announcements, and poll every
// PollInterval in case one was missed.
func (r *Router) watch(ctx context.Context) {
	defer close(r.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		if conn == nil {
			c, err := pgx.Connect(ctx, r.cfg.MetaDSN)
			if err == nil {
				if _, err = c.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
					c.Close(ctx)
				} else {
					conn = c
				}
			}
			if err != nil && ctx.Err() == nil {
				r.cfg.Logger.Warn("shard: listening for map changes", "err", err)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, r.cfg.PollInterval)
		if conn != nil {
			if _, err := conn.WaitForNotification(wctx); err != nil && wctx.Err() == nil {
				conn.Close(ctx)
				conn = nil
			} else if conn.IsClosed() {
				conn = nil
			}
		} else {
			<-wctx.Done()
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err := r.refresh(ctx); err != nil && ctx.Err() == nil {
			r.metrics.refreshErrors.Add(1)
			r.cfg.Logger.Warn("shard: reloading map", "keyspace", r.cfg.Keyspace, "err", err)
		}
	}
}
