package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/scaleout/scaleout/replica"
)

// Move is one bucket's move between shards.
type Move struct {
	// Bucket is the bucket moved.
	Bucket int
	// From and To are the source and target shards' names.
	From string
	To   string
}

// Plan is the list of moves a rebalance makes.
type Plan struct {
	// Keyspace is the keyspace rebalanced.
	Keyspace string
	// Moves are every bucket move, done or not.
	Moves []Move
	// Resumed is true when the plan is a journaled rebalance that did not
	// finish, with Done of its moves already complete.
	Resumed bool
	Done    int
}

// String prints the plan: how many buckets move from where to where.
func (p Plan) String() string {
	if len(p.Moves) == 0 {
		return fmt.Sprintf("keyspace %s: balanced, nothing to move\n", p.Keyspace)
	}
	type pair struct{ from, to string }
	count := map[pair]int{}
	var order []pair
	for _, m := range p.Moves {
		k := pair{m.From, m.To}
		if count[k] == 0 {
			order = append(order, k)
		}
		count[k]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "keyspace %s: %d bucket moves", p.Keyspace, len(p.Moves))
	if p.Resumed {
		fmt.Fprintf(&b, " (resumed, %d done)", p.Done)
	}
	b.WriteString("\n")
	for _, k := range order {
		fmt.Fprintf(&b, "  %s -> %s: %d buckets\n", k.from, k.to, count[k])
	}
	return b.String()
}

// balance returns the moves that even out m's buckets over its shards,
// moving as few as possible: each shard ends with floor or ceil of
// buckets/shards, the larger shares going to the shards that have most.
func balance(m *Map) []Move {
	n := len(m.Shards)
	if m.Strategy != Hash || n == 0 {
		return nil
	}
	have := map[string]int{}
	for _, s := range m.Buckets {
		have[s]++
	}
	names := make([]string, n)
	for i, s := range m.Shards {
		names[i] = s.Name
	}
	sort.SliceStable(names, func(i, j int) bool { return have[names[i]] > have[names[j]] })
	want := map[string]int{}
	for i, name := range names {
		want[name] = len(m.Buckets) / n
		if i < len(m.Buckets)%n {
			want[name]++
		}
	}
	var moves []Move
	left := maps2(have)
	for b, s := range m.Buckets {
		if left[s] <= want[s] {
			continue
		}
		// Give to the shard furthest below its share (ties by map order).
		to := ""
		for _, name := range names {
			if left[name] < want[name] && (to == "" || want[name]-left[name] > want[to]-left[to]) {
				to = name
			}
		}
		if to == "" {
			break
		}
		moves = append(moves, Move{Bucket: b, From: s, To: to})
		left[s]--
		left[to]++
	}
	return moves
}

func maps2(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// RebalanceConfig configures a Rebalancer. The zero value works.
type RebalanceConfig struct {
	// Cluster is the template of each shard's replica.Config (Nodes are
	// the shard's). By default, replica's defaults.
	Cluster replica.Config
	// WriterWait bounds the wait, after a bucket's fence changes on a
	// shard, for transactions that wrote to its tables before to end; a
	// longer one fails the move (rolled back). By default, 10s.
	WriterWait time.Duration
	// CatchUpPasses is how many passes over the change log may run before
	// a bucket's writes are held for the cutover, stopping early when a
	// pass finds fewer than 32 changes. By default, 8.
	CatchUpPasses int
	// Settle is how long to wait after publishing a bucket's frozen state
	// before fencing it on the shard, so that Routers hold writes (For
	// waits) rather than have them refused and retried (Do). By default,
	// 0: Routers hear of the map by LISTEN/NOTIFY within milliseconds.
	Settle time.Duration
	// Batch is how many buckets between the same two shards move together
	// (one copy, one catch-up, one cutover and one map flip for all):
	// more is faster, fewer holds writes to fewer keys at a time. By
	// default, 16.
	Batch int
	// ReadGrace is how long the old rows of moved buckets stay on the
	// source shard after the flip, readable by Routers that have not
	// loaded the new map yet (LISTEN/NOTIFY usually takes milliseconds;
	// the poll, Config.PollInterval, catches a missed announcement).
	// Writes to them are refused from the flip on. Other batches move
	// meanwhile. By default, 1s; negative means none.
	ReadGrace time.Duration
	// ReplicaWait bounds the wait, before a batch is frozen and again
	// before its flip, for the target shard's replicas to replay the rows
	// copied to its primary, so that reads routed to them after the flip
	// find every row. A reachable replica still behind after it fails the
	// batch (rolled back); an unreachable node is skipped (it serves no
	// reads). By default, 10s.
	ReplicaWait time.Duration
	// Progress, if not nil, is called after every step of a move.
	Progress func(Progress)
	// Logger receives each move. By default, slog.Default().
	Logger *slog.Logger
}

// Progress is a rebalance's progress.
type Progress struct {
	Keyspace   string
	MovesDone  int
	MovesTotal int
	// Buckets and Phase are the current batch's.
	Buckets    []int
	Phase      string
	RowsCopied int64
	Elapsed    time.Duration
	// ETA is the estimated time left, from the pace of the moves done in
	// this run (0 until one is done).
	ETA time.Duration
	// LongestHold is the longest time a batch's writes were held.
	LongestHold time.Duration
}

// Report is the outcome of a rebalance run.
type Report struct {
	// Plan is the rebalance's plan.
	Plan Plan
	// Moves is how many bucket moves this run completed.
	Moves int
	// RowsCopied counts rows copied to targets, catch-up included.
	RowsCopied int64
	// Elapsed is the run's duration.
	Elapsed time.Duration
	// LongestHold is the longest time one batch's writes were held
	// (frozen map published to flip committed).
	LongestHold time.Duration
}

// Rebalancer adds shards and moves buckets online. Its methods may be
// called concurrently; a keyspace's rebalance runs in one process at a
// time (an advisory lock on the metadata database), others fail with
// ErrRebalanceRunning.
type Rebalancer struct {
	store   *Store
	cfg     RebalanceConfig
	metrics *rebalanceMetrics

	mu       sync.Mutex
	clusters map[string]*clusterRef
}

// NewRebalancer returns a Rebalancer over the metadata store.
func NewRebalancer(store *Store, cfg RebalanceConfig) *Rebalancer {
	if cfg.WriterWait <= 0 {
		cfg.WriterWait = 10 * time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 16
	}
	if cfg.ReplicaWait <= 0 {
		cfg.ReplicaWait = 10 * time.Second
	}
	if cfg.ReadGrace == 0 {
		cfg.ReadGrace = time.Second
	}
	if cfg.CatchUpPasses <= 0 {
		cfg.CatchUpPasses = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Cluster.Logger == nil {
		cfg.Cluster.Logger = cfg.Logger
	}
	return &Rebalancer{store: store, cfg: cfg, metrics: &rebalanceMetrics{}, clusters: map[string]*clusterRef{}}
}

// Close closes the shard connections the Rebalancer opened.
func (rb *Rebalancer) Close() {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	for _, c := range rb.clusters {
		c.db.Close()
	}
	rb.clusters = map[string]*clusterRef{}
}

func (rb *Rebalancer) cluster(ctx context.Context, s ShardSpec) (*replica.Cluster, error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if c := rb.clusters[s.Name]; c != nil && slices.Equal(c.nodes, s.Nodes) {
		return c.db, nil
	}
	cfg := rb.cfg.Cluster
	cfg.Nodes = s.Nodes
	db, err := replica.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("shard: opening shard %q: %w", s.Name, err)
	}
	if old := rb.clusters[s.Name]; old != nil {
		old.db.Close()
	}
	rb.clusters[s.Name] = &clusterRef{nodes: slices.Clone(s.Nodes), db: db}
	return db, nil
}

// lock takes the keyspace's rebalance lock on a dedicated connection,
// held until unlock; a crash of the process releases it.
func (rb *Rebalancer) lock(ctx context.Context, keyspace string) (unlock func(), err error) {
	conn, err := rb.store.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("shard: rebalance lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('scaleout_shard_rebalance'), hashtext($1))`, keyspace).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("shard: rebalance lock: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, fmt.Errorf("%w: keyspace %q", ErrRebalanceRunning, keyspace)
	}
	return func() {
		if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_unlock(hashtext('scaleout_shard_rebalance'), hashtext($1))`, keyspace); err != nil {
			conn.Conn().Close(context.Background())
		}
		conn.Release()
	}, nil
}

type journalMove struct {
	seq int
	Move
	phase string
}

// pending returns the keyspace's unfinished rebalance, id 0 if none.
func (rb *Rebalancer) pending(ctx context.Context, keyspace string) (int64, []journalMove, error) {
	var id int64
	err := rb.store.pool.QueryRow(ctx, `SELECT id FROM scaleout_shard_rebalances WHERE keyspace = $1 AND state = 'running' ORDER BY id LIMIT 1`, keyspace).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("shard: reading rebalance journal: %w", err)
	}
	rows, err := rb.store.pool.Query(ctx, `SELECT seq, bucket, src, dst, phase FROM scaleout_shard_moves WHERE rebalance_id = $1 ORDER BY seq`, id)
	if err != nil {
		return 0, nil, fmt.Errorf("shard: reading rebalance journal: %w", err)
	}
	moves, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (journalMove, error) {
		var m journalMove
		err := row.Scan(&m.seq, &m.Bucket, &m.From, &m.To, &m.phase)
		return m, err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("shard: reading rebalance journal: %w", err)
	}
	return id, moves, nil
}

// journal records a new rebalance of moves, in tx.
func journal(ctx context.Context, tx pgx.Tx, keyspace string, moves []Move) (int64, error) {
	var id int64
	if err := tx.QueryRow(ctx, `INSERT INTO scaleout_shard_rebalances (keyspace, state) VALUES ($1, 'running') RETURNING id`, keyspace).Scan(&id); err != nil {
		return 0, fmt.Errorf("shard: journaling rebalance: %w", err)
	}
	rows := make([][]any, len(moves))
	for i, m := range moves {
		rows[i] = []any{id, i, m.Bucket, m.From, m.To, "planned"}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"scaleout_shard_moves"}, []string{"rebalance_id", "seq", "bucket", "src", "dst", "phase"}, pgx.CopyFromRows(rows)); err != nil {
		return 0, fmt.Errorf("shard: journaling moves: %w", err)
	}
	return id, nil
}

// Plan returns what Run would do now: the unfinished rebalance's moves,
// or the moves that balance the current map.
func (rb *Rebalancer) Plan(ctx context.Context, keyspace string) (Plan, error) {
	id, jm, err := rb.pending(ctx, keyspace)
	if err != nil {
		return Plan{}, err
	}
	if id != 0 {
		return journalPlan(keyspace, jm), nil
	}
	m, err := rb.store.Map(ctx, keyspace)
	if err != nil {
		return Plan{}, err
	}
	return Plan{Keyspace: keyspace, Moves: balance(m)}, nil
}

func journalPlan(keyspace string, jm []journalMove) Plan {
	p := Plan{Keyspace: keyspace, Resumed: true}
	for _, m := range jm {
		p.Moves = append(p.Moves, m.Move)
		if m.phase == "done" {
			p.Done++
		}
	}
	return p
}

// AddShard adds spec to a hash keyspace (owning no bucket yet) and
// journals the rebalance that gives it its share, about 1/(N+1) of the
// buckets, taken from the other shards. Run performs the moves.
func (rb *Rebalancer) AddShard(ctx context.Context, keyspace string, spec ShardSpec) (Plan, error) {
	unlock, err := rb.lock(ctx, keyspace)
	if err != nil {
		return Plan{}, err
	}
	defer unlock()
	if id, _, err := rb.pending(ctx, keyspace); err != nil {
		return Plan{}, err
	} else if id != 0 {
		return Plan{}, fmt.Errorf("shard: keyspace %q has an unfinished rebalance; run it first", keyspace)
	}
	var plan Plan
	err = pgx.BeginFunc(ctx, rb.store.pool, func(tx pgx.Tx) error {
		m, err := loadMap(ctx, tx, keyspace)
		if err != nil {
			return err
		}
		if m.Strategy != Hash {
			return fmt.Errorf("shard: AddShard: keyspace %q is %s; only hash keyspaces rebalance (SplitRange for ranges)", keyspace, m.Strategy)
		}
		if m.shardIndex(spec.Name) >= 0 {
			return fmt.Errorf("shard: AddShard: keyspace %q already has shard %q", keyspace, spec.Name)
		}
		n := m.clone()
		n.Version++
		n.Shards = append(n.Shards, spec)
		if err := n.Validate(); err != nil {
			return err
		}
		if err := insertMap(ctx, tx, n); err != nil {
			return err
		}
		plan = Plan{Keyspace: keyspace, Moves: balance(n)}
		_, err = journal(ctx, tx, keyspace, plan.Moves)
		return err
	})
	return plan, err
}

// Run completes the keyspace's unfinished rebalance (resuming a crashed
// run: moves cut over before the crash are finished, moves caught before
// their cutover are rolled back and redone), or else balances the map.
// Moves between the same two shards run in batches of up to
// RebalanceConfig.Batch buckets. Each batch copies its buckets' rows of
// every registered table to the new shard, catches up with writes made
// meanwhile (logged by a trigger), holds the buckets' writes for a last
// catch-up, flips the map and deletes the old copies. A batch failing
// before its flip is rolled back (nothing lost, the old shard still
// serves the buckets) and Run returns its error; when ctx is cancelled
// Run stops where it is, as a crash would, and the next Run resumes.
func (rb *Rebalancer) Run(ctx context.Context, keyspace string) (Report, error) {
	start := time.Now()
	unlock, err := rb.lock(ctx, keyspace)
	if err != nil {
		return Report{}, err
	}
	defer unlock()
	id, jm, err := rb.pending(ctx, keyspace)
	if err != nil {
		return Report{}, err
	}
	if id == 0 {
		m, err := rb.store.Map(ctx, keyspace)
		if err != nil {
			return Report{}, err
		}
		moves := balance(m)
		if len(moves) == 0 {
			return Report{Plan: Plan{Keyspace: keyspace}}, nil
		}
		err = pgx.BeginFunc(ctx, rb.store.pool, func(tx pgx.Tx) error {
			id, err = journal(ctx, tx, keyspace, moves)
			return err
		})
		if err != nil {
			return Report{}, err
		}
		if id, jm, err = rb.pending(ctx, keyspace); err != nil {
			return Report{}, err
		}
	}
	rep := Report{Plan: journalPlan(keyspace, jm)}
	tables, err := rb.store.Tables(ctx, keyspace)
	if err != nil {
		return rep, err
	}
	run := &moveRun{rb: rb, id: id, keyspace: keyspace, tables: tables, prepared: map[string]bool{}, start: start,
		total: len(jm), done: rep.Plan.Done, doneAtStart: rep.Plan.Done, report: &rep, cols: map[string]string{}}
	defer run.closeNodes()
	rb.metrics.start(len(jm), rep.Plan.Done)
	defer rb.metrics.stop()
	fail := func(err error) (Report, error) {
		rep.Elapsed = time.Since(start)
		return rep, err
	}
	// Resume: finish what was flipped, roll back what was caught midway.
	for _, mv := range jm {
		b := &batch{seqs: []int{mv.seq}, buckets: []int{mv.Bucket}, from: mv.From, to: mv.To}
		switch mv.phase {
		case "flipped":
			if err := run.cleanup(ctx, b); err != nil {
				return fail(err)
			}
			run.finished(b)
		case "copying", "frozen":
			rb.cfg.Logger.Info("shard: rolling back an interrupted move before redoing it", "keyspace", keyspace, "bucket", mv.Bucket, "phase", mv.phase)
			if err := run.rollback(ctx, b); err != nil {
				return fail(err)
			}
		}
	}
	// Flipped batches keep their old rows readable on the source for
	// ReadGrace, for Routers that have not loaded the new map yet, and
	// are cleaned up meanwhile.
	var flipped []*batch
	drain := func(all bool) error {
		for len(flipped) > 0 {
			b := flipped[0]
			if wait := rb.cfg.ReadGrace - time.Since(b.flippedAt); wait > 0 {
				if !all {
					return nil
				}
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if err := run.cleanup(ctx, b); err != nil {
				return err
			}
			flipped = flipped[1:]
			run.finished(b)
		}
		return nil
	}
	for _, b := range batches(jm, rb.cfg.Batch) {
		if err := run.move(ctx, b); err != nil {
			if ctx.Err() == nil {
				if derr := drain(true); derr != nil {
					err = fmt.Errorf("%w (and cleaning up moved buckets: %w)", err, derr)
				}
			}
			return fail(err)
		}
		flipped = append(flipped, b)
		if err := drain(false); err != nil {
			return fail(err)
		}
	}
	if err := drain(true); err != nil {
		return fail(err)
	}
	if _, err := rb.store.pool.Exec(ctx, `UPDATE scaleout_shard_rebalances SET state = 'done', updated_at = now() WHERE id = $1`, id); err != nil {
		return fail(fmt.Errorf("shard: closing rebalance journal: %w", err))
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// batch is a group of bucket moves between the same two shards, moved
// together.
type batch struct {
	seqs      []int
	buckets   []int
	from      string
	to        string
	flippedAt time.Time
}

// batches groups the moves not done or flipped (those were handled) by
// source and target shard, in order of first appearance, in batches of
// up to n.
func batches(jm []journalMove, n int) []*batch {
	var out []*batch
	open := map[[2]string]*batch{}
	for _, mv := range jm {
		if mv.phase == "done" || mv.phase == "flipped" {
			continue
		}
		pair := [2]string{mv.From, mv.To}
		cur := open[pair]
		if cur == nil || len(cur.buckets) >= n {
			cur = &batch{from: mv.From, to: mv.To}
			open[pair] = cur
			out = append(out, cur)
		}
		cur.seqs = append(cur.seqs, mv.seq)
		cur.buckets = append(cur.buckets, mv.Bucket)
	}
	return out
}

// Abort rolls back the keyspace's unfinished rebalance: moves not yet cut
// over are undone (the old shard keeps the bucket), moves already cut
// over are finished, and the journal is closed.
func (rb *Rebalancer) Abort(ctx context.Context, keyspace string) error {
	unlock, err := rb.lock(ctx, keyspace)
	if err != nil {
		return err
	}
	defer unlock()
	id, jm, err := rb.pending(ctx, keyspace)
	if err != nil || id == 0 {
		return err
	}
	tables, err := rb.store.Tables(ctx, keyspace)
	if err != nil {
		return err
	}
	run := &moveRun{rb: rb, id: id, keyspace: keyspace, tables: tables, prepared: map[string]bool{}, start: time.Now(), report: &Report{}, cols: map[string]string{}}
	for _, mv := range jm {
		b := &batch{seqs: []int{mv.seq}, buckets: []int{mv.Bucket}, from: mv.From, to: mv.To}
		switch mv.phase {
		case "copying", "frozen":
			if err := run.rollback(ctx, b); err != nil {
				return err
			}
		case "flipped":
			if err := run.cleanup(ctx, b); err != nil {
				return err
			}
		}
	}
	if _, err := rb.store.pool.Exec(ctx, `UPDATE scaleout_shard_rebalances SET state = 'aborted', updated_at = now() WHERE id = $1`, id); err != nil {
		return fmt.Errorf("shard: closing rebalance journal: %w", err)
	}
	return nil
}

// moveRun is the state of one Run.
type moveRun struct {
	rb          *Rebalancer
	id          int64
	keyspace    string
	tables      []Table
	prepared    map[string]bool
	cols        map[string]string
	start       time.Time
	total       int
	done        int
	doneAtStart int
	report      *Report
	nodes       map[string]*pgx.Conn // direct connections for waitReplicas
}

func (r *moveRun) finished(b *batch) {
	r.done += len(b.buckets)
	r.report.Moves += len(b.buckets)
	r.rb.metrics.movesDone(len(b.buckets))
	r.progress(b, "done")
}

func (r *moveRun) progress(b *batch, phase string) {
	if r.rb.cfg.Progress == nil {
		return
	}
	p := Progress{Keyspace: r.keyspace, MovesDone: r.done, MovesTotal: r.total, Buckets: b.buckets, Phase: phase,
		RowsCopied: r.report.RowsCopied, Elapsed: time.Since(r.start), LongestHold: r.report.LongestHold}
	if n := r.done - r.doneAtStart; n > 0 {
		p.ETA = time.Duration(float64(p.Elapsed) / float64(n) * float64(r.total-r.done))
	}
	r.rb.cfg.Progress(p)
}

func (r *moveRun) setPhase(ctx context.Context, b *batch, phase string) error {
	_, err := r.rb.store.pool.Exec(ctx, `UPDATE scaleout_shard_moves SET phase = $3 WHERE rebalance_id = $1 AND seq = ANY($2)`, r.id, b.seqs, phase)
	if err != nil {
		return fmt.Errorf("shard: journaling move of buckets %v: %w", b.buckets, err)
	}
	return nil
}

// shards returns the current map and the source and target clusters,
// prepared (fence schema and triggers installed).
func (r *moveRun) shards(ctx context.Context, b *batch) (*Map, *replica.Cluster, *replica.Cluster, error) {
	m, err := r.rb.store.Map(ctx, r.keyspace)
	if err != nil {
		return nil, nil, nil, err
	}
	var dbs [2]*replica.Cluster
	for i, name := range []string{b.from, b.to} {
		si := m.shardIndex(name)
		if si < 0 {
			return nil, nil, nil, fmt.Errorf("shard: move of buckets %v: shard %q is not in the map", b.buckets, name)
		}
		db, err := r.rb.cluster(ctx, m.Shards[si])
		if err != nil {
			return nil, nil, nil, err
		}
		if !r.prepared[name] {
			if err := prepareShard(ctx, db, r.keyspace, r.tables); err != nil {
				return nil, nil, nil, fmt.Errorf("shard: preparing shard %q: %w", name, err)
			}
			r.prepared[name] = true
		}
		dbs[i] = db
	}
	return m, dbs[0], dbs[1], nil
}

// move runs one batch of planned moves.
func (r *moveRun) move(ctx context.Context, b *batch) (err error) {
	log := r.rb.cfg.Logger.With("keyspace", r.keyspace, "buckets", b.buckets, "from", b.from, "to", b.to)
	m, src, dst, err := r.shards(ctx, b)
	if err != nil {
		return err
	}
	for _, bk := range b.buckets {
		if m.Buckets[bk] != b.from {
			return fmt.Errorf("shard: move of bucket %d from %q: the map (version %d) places it on %q", bk, b.from, m.Version, m.Buckets[bk])
		}
	}
	defer func() {
		if err == nil || ctx.Err() != nil {
			return // success, or a stop that the next Run resumes
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if rerr := r.rollback(rctx, b); rerr != nil {
			err = fmt.Errorf("%w (and rolling back: %w)", err, rerr)
		} else {
			err = fmt.Errorf("%w (move rolled back; buckets %v stay on %q)", err, b.buckets, b.from)
		}
	}()
	if err := r.setPhase(ctx, b, "copying"); err != nil {
		return err
	}
	r.progress(b, "copying")
	// The target may hold leftovers of an earlier attempt or a stale fence.
	if err := clearFence(ctx, dst, r.keyspace, b.buckets); err != nil {
		return err
	}
	if _, err := deleteBuckets(ctx, dst, r.tables, b.buckets); err != nil {
		return err
	}
	if err := setFence(ctx, src, r.keyspace, r.tables, b.buckets, fenceMoving, true, r.rb.cfg.WriterWait); err != nil {
		return err
	}
	for _, t := range r.tables {
		n, err := r.copyRows(ctx, src, dst, t, b.buckets, nil)
		if err != nil {
			return err
		}
		r.report.RowsCopied += n
		r.rb.metrics.rows.Add(n)
	}
	for pass := 0; pass < r.rb.cfg.CatchUpPasses; pass++ {
		n, err := r.catchUp(ctx, src, dst, b.buckets)
		if err != nil {
			return err
		}
		if n < 32 {
			break
		}
	}
	if err := r.waitReplicas(ctx, m, b.to, dst); err != nil {
		return err
	}
	// Cutover: hold the buckets' writes, catch up with the last ones, flip.
	if err := r.setPhase(ctx, b, "frozen"); err != nil {
		return err
	}
	r.progress(b, "frozen")
	holdStart := time.Now()
	if err := r.publishFrozen(ctx, b.buckets, true); err != nil {
		return err
	}
	if r.rb.cfg.Settle > 0 {
		time.Sleep(r.rb.cfg.Settle)
	}
	if err := setFence(ctx, src, r.keyspace, r.tables, b.buckets, fenceFrozen, true, r.rb.cfg.WriterWait); err != nil {
		return err
	}
	for {
		n, err := r.catchUp(ctx, src, dst, b.buckets)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	if err := r.waitReplicas(ctx, m, b.to, dst); err != nil {
		return err
	}
	if err := r.flip(ctx, b); err != nil {
		return err
	}
	hold := time.Since(holdStart)
	r.rb.metrics.hold(hold)
	r.report.LongestHold = max(r.report.LongestHold, hold)
	log.Debug("shard: buckets moved", "hold", hold)
	b.flippedAt = time.Now()
	return nil
}

// publishFrozen publishes the next map with buckets frozen or not.
func (r *moveRun) publishFrozen(ctx context.Context, buckets []int, frozen bool) error {
	return pgx.BeginFunc(ctx, r.rb.store.pool, func(tx pgx.Tx) error {
		m, err := loadMap(ctx, tx, r.keyspace)
		if err != nil {
			return err
		}
		n := m.clone()
		n.Frozen = slices.DeleteFunc(n.Frozen, func(b int) bool { return slices.Contains(buckets, b) })
		if frozen {
			n.Frozen = append(n.Frozen, buckets...)
		}
		if slices.Equal(n.Frozen, m.Frozen) {
			return nil
		}
		n.Version++
		return insertMap(ctx, tx, n)
	})
}

// flip publishes the map placing the buckets on their new shard and
// journals their moves as flipped, in one transaction.
func (r *moveRun) flip(ctx context.Context, b *batch) error {
	err := pgx.BeginFunc(ctx, r.rb.store.pool, func(tx pgx.Tx) error {
		m, err := loadMap(ctx, tx, r.keyspace)
		if err != nil {
			return err
		}
		n := m.clone()
		n.Version++
		for _, bk := range b.buckets {
			n.Buckets[bk] = b.to
		}
		n.Frozen = slices.DeleteFunc(n.Frozen, func(x int) bool { return slices.Contains(b.buckets, x) })
		if err := insertMap(ctx, tx, n); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE scaleout_shard_moves SET phase = 'flipped' WHERE rebalance_id = $1 AND seq = ANY($2)`, r.id, b.seqs)
		return err
	})
	if err != nil {
		return fmt.Errorf("shard: flipping buckets %v to %q: %w", b.buckets, b.to, err)
	}
	return nil
}

// cleanup finishes flipped moves: fence the old shard's buckets as
// moved, delete their old rows and change log.
func (r *moveRun) cleanup(ctx context.Context, b *batch) error {
	_, src, _, err := r.shards(ctx, b)
	if err != nil {
		return err
	}
	if err := setFence(ctx, src, r.keyspace, r.tables, b.buckets, fenceMoved, false, 0); err != nil {
		return err
	}
	if _, err := deleteBuckets(ctx, src, r.tables, b.buckets); err != nil {
		return err
	}
	if _, err := src.Exec(ctx, `DELETE FROM scaleout_shard_changes WHERE keyspace = $1 AND bucket = ANY($2)`, r.keyspace, b.buckets); err != nil {
		return fmt.Errorf("shard: clearing change log of buckets %v: %w", b.buckets, err)
	}
	return r.setPhase(ctx, b, "done")
}

// rollback undoes moves that were not flipped: the target's copies are
// deleted, the source's fence and change log removed, the map unfrozen.
func (r *moveRun) rollback(ctx context.Context, b *batch) error {
	// Never undo a flip: if the flip's commit went through although its
	// result was lost, the target holds the only current copy.
	var flipped int
	if err := r.rb.store.pool.QueryRow(ctx, `SELECT count(*) FROM scaleout_shard_moves WHERE rebalance_id = $1 AND seq = ANY($2) AND phase IN ('flipped', 'done')`,
		r.id, b.seqs).Scan(&flipped); err != nil {
		return fmt.Errorf("shard: rollback of buckets %v: reading the journal: %w", b.buckets, err)
	}
	m, src, dst, err := r.shards(ctx, b)
	if err != nil {
		return err
	}
	for _, bk := range b.buckets {
		if m.Buckets[bk] == b.to {
			flipped++
		}
	}
	if flipped > 0 {
		return fmt.Errorf("shard: buckets %v were flipped to %q; not rolled back, the next Run finishes the move", b.buckets, b.to)
	}
	if err := r.publishFrozen(ctx, b.buckets, false); err != nil {
		return fmt.Errorf("shard: rollback of buckets %v: %w", b.buckets, err)
	}
	if err := clearFence(ctx, src, r.keyspace, b.buckets); err != nil {
		return fmt.Errorf("shard: rollback of buckets %v: %w", b.buckets, err)
	}
	if _, err := deleteBuckets(ctx, dst, r.tables, b.buckets); err != nil {
		return fmt.Errorf("shard: rollback of buckets %v: %w", b.buckets, err)
	}
	return r.setPhase(ctx, b, "planned")
}

// intList formats ints for an SQL IN list.
func intList[T int | int64](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatInt(int64(x), 10)
	}
	return strings.Join(s, ",")
}

// copyRows copies table t's rows of buckets from src to dst, replacing
// what dst holds for them: all of them, or those whose key is among the
// change log ids given.
func (r *moveRun) copyRows(ctx context.Context, src, dst *replica.Cluster, t Table, buckets []int, ids []int64) (int64, error) {
	cols, ok := r.cols[t.Name]
	if !ok {
		var err error
		if cols, err = columns(ctx, src, t.Name); err != nil {
			return 0, err
		}
		r.cols[t.Name] = cols
	}
	where := fmt.Sprintf("%s IN (%s)", ident(t.BucketColumn), intList(buckets))
	if ids != nil {
		where += fmt.Sprintf(" AND %s::text IN (SELECT key FROM scaleout_shard_changes WHERE id IN (%s))", ident(t.KeyColumn), intList(ids))
	}
	dtx, err := dst.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer dtx.Rollback(context.WithoutCancel(ctx))
	if _, err := dtx.Exec(ctx, `SET LOCAL scaleout.shard_mover = 'on'`); err != nil {
		return 0, err
	}
	if ids != nil {
		// Delete the target's copies of the changed keys; what the source
		// holds for them now is copied below.
		rows, err := src.Query(replica.Primary(ctx), `SELECT DISTINCT key FROM scaleout_shard_changes WHERE id = ANY($1)`, ids)
		if err != nil {
			return 0, fmt.Errorf("reading change log: %w", err)
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return 0, fmt.Errorf("reading change log: %w", err)
		}
		if _, err := dtx.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s = ANY($1) AND %s::text = ANY($2)", ident(t.Name), ident(t.BucketColumn), ident(t.KeyColumn)), buckets, keys); err != nil {
			return 0, fmt.Errorf("catching up %s: %w", t.Name, err)
		}
	}
	sconn, err := primaryConn(ctx, src)
	if err != nil {
		return 0, err
	}
	defer sconn.Release()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		_, err := sconn.Conn().PgConn().CopyTo(ctx, pw, fmt.Sprintf("COPY (SELECT %s FROM %s WHERE %s) TO STDOUT", cols, ident(t.Name), where))
		pw.CloseWithError(err)
		errc <- err
	}()
	tag, err := dtx.Conn().PgConn().CopyFrom(ctx, pr, fmt.Sprintf("COPY %s (%s) FROM STDIN", ident(t.Name), cols))
	pr.CloseWithError(io.ErrClosedPipe)
	if serr := <-errc; serr != nil {
		return 0, fmt.Errorf("copying %s buckets %v out of the source: %w", t.Name, buckets, serr)
	}
	if err != nil {
		return 0, fmt.Errorf("copying %s buckets %v into the target: %w", t.Name, buckets, err)
	}
	if err := dtx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("copying %s buckets %v: %w", t.Name, buckets, err)
	}
	return tag.RowsAffected(), nil
}

// primaryConn acquires a pool connection to db's primary.
func primaryConn(ctx context.Context, db *replica.Cluster) (*pgxpool.Conn, error) {
	conn, err := db.Read(replica.Primary(ctx))
	if err != nil {
		return nil, fmt.Errorf("connecting to the source primary: %w", err)
	}
	return conn, nil
}

// catchUp applies one pass of the source's change log for buckets to the
// target and returns how many changes it applied.
func (r *moveRun) catchUp(ctx context.Context, src, dst *replica.Cluster, buckets []int) (int, error) {
	rows, err := src.Query(replica.Primary(ctx), `SELECT id, tbl FROM scaleout_shard_changes WHERE keyspace = $1 AND bucket = ANY($2) ORDER BY id LIMIT 5000`, r.keyspace, buckets)
	if err != nil {
		return 0, fmt.Errorf("reading change log: %w", err)
	}
	byTable := map[string][]int64{}
	var all []int64
	for rows.Next() {
		var id int64
		var tbl string
		if err := rows.Scan(&id, &tbl); err != nil {
			rows.Close()
			return 0, fmt.Errorf("reading change log: %w", err)
		}
		byTable[tbl] = append(byTable[tbl], id)
		all = append(all, id)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("reading change log: %w", err)
	}
	if len(all) == 0 {
		return 0, nil
	}
	for _, t := range r.tables {
		ids := byTable[t.Name]
		if len(ids) == 0 {
			continue
		}
		if _, err := r.copyRows(ctx, src, dst, t, buckets, ids); err != nil {
			return 0, err
		}
	}
	if _, err := src.Exec(ctx, `DELETE FROM scaleout_shard_changes WHERE id = ANY($1)`, all); err != nil {
		return 0, fmt.Errorf("trimming change log: %w", err)
	}
	return len(all), nil
}

// waitReplicas waits until every reachable replica of the named shard has
// replayed its primary's WAL up to now (replica.Cluster.Token), asking
// each node directly (the cluster's own lag figures are as old as its
// last check).
func (r *moveRun) waitReplicas(ctx context.Context, m *Map, shardName string, db *replica.Cluster) error {
	si := m.shardIndex(shardName)
	if si < 0 || len(m.Shards[si].Nodes) < 2 {
		return nil // a lone primary
	}
	tok, err := db.Token(ctx)
	if err != nil {
		return fmt.Errorf("shard: WAL position of %q: %w", shardName, err)
	}
	deadline := time.Now().Add(r.rb.cfg.ReplicaWait)
	for _, dsn := range m.Shards[si].Nodes {
		conn, err := r.nodeConn(ctx, dsn)
		if err != nil {
			r.rb.cfg.Logger.Warn("shard: node unreachable, not waiting for it to replay the copy", "shard", shardName, "err", err)
			continue
		}
		for {
			var standby, reached bool
			err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)`, tok.String()).Scan(&standby, &reached)
			if err != nil {
				r.dropNodeConn(ctx, dsn)
				r.rb.cfg.Logger.Warn("shard: node unreachable, not waiting for it to replay the copy", "shard", shardName, "err", err)
				break
			}
			if !standby || reached {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("shard: a replica of %q has not replayed the copied rows (WAL %s) after %s", shardName, tok, r.rb.cfg.ReplicaWait)
			}
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// nodeConn returns the run's connection to one node, opening it.
func (r *moveRun) nodeConn(ctx context.Context, dsn string) (*pgx.Conn, error) {
	if c := r.nodes[dsn]; c != nil && !c.IsClosed() {
		return c, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return nil, err
	}
	if r.nodes == nil {
		r.nodes = map[string]*pgx.Conn{}
	}
	r.nodes[dsn] = c
	return c, nil
}

func (r *moveRun) dropNodeConn(ctx context.Context, dsn string) {
	if c := r.nodes[dsn]; c != nil {
		c.Close(context.WithoutCancel(ctx))
		delete(r.nodes, dsn)
	}
}

// closeNodes closes the run's node connections.
func (r *moveRun) closeNodes() {
	for dsn := range r.nodes {
		r.dropNodeConn(context.Background(), dsn)
	}
}
