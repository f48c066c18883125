package shard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/scaleout/scaleout/internal/testenv"
	"github.com/scaleout/scaleout/replica"
)

// itemsFixture is a hash keyspace with one registered table, items, keyed
// by owner (several rows per owner), and the rows it should hold.
type itemsFixture struct {
	ks     string
	table  string
	store  *Store
	router *Router
	meta   string
	shards []string

	mu     sync.Mutex
	expect map[int64]int64 // id -> val
	owner  map[int64]int64 // id -> owner
}

const owners = 1000

// stable is the number of rows (ids 0..stable-1) that the load's writers
// update but never delete, and that its readers read.
const stable = 1000

// newItems creates the keyspace over n shards with buckets buckets and
// rows rows.
func newItems(t *testing.T, n, buckets, rows int) *itemsFixture {
	t.Helper()
	meta, shards := databases(t)
	ctx := context.Background()
	f := &itemsFixture{ks: keyspaceName(t), meta: meta, shards: shards, expect: map[int64]int64{}, owner: map[int64]int64{}}
	f.table = "items_" + f.ks
	execAll(t, shards, fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, owner bigint NOT NULL, bucket int NOT NULL, val bigint NOT NULL);
		CREATE INDEX ON %[1]s (bucket)`, f.table))
	f.store = openStore(t, meta)
	if err := f.store.CreateKeyspace(ctx, NewHashMap(f.ks, buckets, specs(shards, n)...)); err != nil {
		t.Fatal(err)
	}
	if err := f.store.RegisterTable(ctx, f.ks, Table{Name: f.table, KeyColumn: "owner", BucketColumn: "bucket"}); err != nil {
		t.Fatal(err)
	}
	f.router = newRouter(t, meta, f.ks)
	type cols struct{ id, owner, val []int64 }
	byShard := map[*replica.Cluster]*cols{}
	for i := range rows {
		id := int64(i)
		o := id % owners
		db, err := f.router.For(ctx, IntKey(o))
		if err != nil {
			t.Fatal(err)
		}
		c := byShard[db]
		if c == nil {
			c = &cols{}
			byShard[db] = c
		}
		c.id, c.owner, c.val = append(c.id, id), append(c.owner, o), append(c.val, id*7)
		f.expect[id], f.owner[id] = id*7, o
	}
	for db, c := range byShard {
		buckets := make([]int32, len(c.owner))
		for i, o := range c.owner {
			buckets[i] = int32(f.router.Bucket(IntKey(o)))
		}
		if _, err := db.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (id, owner, bucket, val) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[])`, f.table),
			c.id, c.owner, buckets, c.val); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *itemsFixture) rebalancer(t *testing.T, cfg RebalanceConfig) *Rebalancer {
	cfg.Cluster = clusterConfig()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	rb := NewRebalancer(f.store, cfg)
	t.Cleanup(rb.Close)
	return rb
}

// load runs writers and readers against the keyspace until stop is
// closed; it records every acknowledged write in f.expect.
type load struct {
	writes, reads, readMisses atomic.Int64
	maxStall                  atomic.Int64 // ns, longest write
	errs                      chan error
	wg                        sync.WaitGroup
	stop                      chan struct{}
}

func (f *itemsFixture) startLoad(writers, readers int) *load {
	l := &load{errs: make(chan error, 100), stop: make(chan struct{})}
	ctx := context.Background()
	for w := range writers {
		l.wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			next := int64(10_000_000 + w)
			var mine []int64
			f.mu.Lock()
			for id := range f.expect {
				if id%int64(writers) == int64(w) && id >= stable {
					mine = append(mine, id)
				}
			}
			f.mu.Unlock()
			for i := 0; i < 100_000; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				var id, o, val int64
				var sql string
				op := rng.IntN(10)
				switch {
				case op < 6 && len(mine) > 0: // update
					id = mine[rng.IntN(len(mine))]
					o, val = f.ownerOf(id), rng.Int64N(1_000_000)
					sql = fmt.Sprintf("UPDATE %s SET val = $2 WHERE id = $1 AND owner = $3", f.table)
				case op < 9: // insert
					id, next = next, next+int64(writers)
					o, val = rng.Int64N(owners), rng.Int64N(1_000_000)
					sql = fmt.Sprintf("INSERT INTO %s (id, owner, bucket, val) VALUES ($1, $3, $4, $2)", f.table)
				default: // delete
					if len(mine) == 0 {
						continue
					}
					j := rng.IntN(len(mine))
					id = mine[j]
					o, val = f.ownerOf(id), -1
					mine = append(mine[:j], mine[j+1:]...)
					sql = fmt.Sprintf("DELETE FROM %s WHERE id = $1 AND owner = $3 AND $2::bigint = -1", f.table)
				}
				start := time.Now()
				err := f.router.Do(ctx, IntKey(o), func(db *replica.Cluster) error {
					args := []any{id, val, o}
					if strings.HasPrefix(sql, "INSERT") {
						args = append(args, f.router.Bucket(IntKey(o)))
					}
					tag, err := db.Exec(ctx, sql, args...)
					if err == nil && tag.RowsAffected() != 1 {
						err = fmt.Errorf("%s id %d: %d rows affected, want 1", strings.Fields(sql)[0], id, tag.RowsAffected())
					}
					return err
				})
				stall := time.Since(start)
				for {
					old := l.maxStall.Load()
					if int64(stall) <= old || l.maxStall.CompareAndSwap(old, int64(stall)) {
						break
					}
				}
				if err != nil {
					select {
					case l.errs <- fmt.Errorf("write: %w", err):
					default:
					}
					return
				}
				l.writes.Add(1)
				f.mu.Lock()
				switch {
				case val == -1:
					delete(f.expect, id)
				case strings.HasPrefix(sql, "INSERT"):
					f.expect[id], f.owner[id] = val, o
					mine = append(mine, id)
				default:
					f.expect[id] = val
				}
				f.mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		})
	}
	for range readers {
		l.wg.Go(func() {
			for i := 0; i < 100_000; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				id := rand.Int64N(stable) // never deleted: always found
				o := id % owners
				db, err := f.router.ForRead(ctx, IntKey(o))
				if err == nil {
					var v int64
					err = db.QueryRow(ctx, fmt.Sprintf("SELECT val FROM %s WHERE id = $1", f.table), id).Scan(&v)
					if errors.Is(err, pgx.ErrNoRows) {
						l.readMisses.Add(1)
						err = nil
					}
				}
				if err != nil {
					select {
					case l.errs <- fmt.Errorf("read: %w", err):
					default:
					}
					return
				}
				l.reads.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *load) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	close(l.errs)
	for err := range l.errs {
		t.Error(err)
	}
	t.Logf("load: %d writes, %d reads, longest write stall %s", l.writes.Load(), l.reads.Load(), time.Duration(l.maxStall.Load()))
	if n := l.readMisses.Load(); n > 0 {
		t.Errorf("%d reads did not find a row that exists", n)
	}
}

func (f *itemsFixture) ownerOf(id int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.owner[id]
}

// verify checks that every expected row exists exactly once, on the shard
// the latest map names for its bucket, with its expected value; that
// count and checksum match; and that no fence or change log is left.
func (f *itemsFixture) verify(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	m, err := f.store.Map(ctx, f.ks)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Frozen) != 0 {
		t.Errorf("map version %d still has frozen buckets %v", m.Version, m.Frozen)
	}
	seen := map[int64]string{}
	var count, sum int64
	for _, s := range m.Shards {
		conn, err := pgx.Connect(ctx, s.Nodes[0])
		if err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctx, fmt.Sprintf("SELECT id, owner, bucket, val FROM %s", f.table))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, o, val int64
			var b int
			if err := rows.Scan(&id, &o, &b, &val); err != nil {
				t.Fatal(err)
			}
			if prev, dup := seen[id]; dup {
				t.Errorf("row %d on %s and on %s", id, prev, s.Name)
			}
			seen[id] = s.Name
			if b != BucketOf(IntKey(o), len(m.Buckets)) {
				t.Errorf("row %d: bucket %d, want %d", id, b, BucketOf(IntKey(o), len(m.Buckets)))
			}
			if m.Buckets[b] != s.Name {
				t.Errorf("row %d (bucket %d) on %s, map version %d says %s", id, b, s.Name, m.Version, m.Buckets[b])
			}
			count++
			sum += id*31 + val
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		var pending int
		if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM scaleout_shard_changes WHERE keyspace = $1) +
			(SELECT count(*) FROM scaleout_shard_fence WHERE keyspace = $1 AND state <> 'moved')`, f.ks).Scan(&pending); err != nil {
			if !strings.Contains(err.Error(), "does not exist") {
				t.Fatal(err)
			}
		} else if pending != 0 {
			t.Errorf("shard %s: %d change-log rows or unfinished fences left", s.Name, pending)
		}
		conn.Close(ctx)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var wantCount, wantSum int64
	for id, val := range f.expect {
		wantCount++
		wantSum += id*31 + val
		if _, ok := seen[id]; !ok {
			t.Errorf("row %d lost", id)
		}
	}
	if count != wantCount || sum != wantSum {
		t.Errorf("count %d checksum %d, want %d and %d", count, sum, wantCount, wantSum)
	}
	t.Logf("verified %d rows, checksum %d, map version %d", count, sum, m.Version)
}

func TestRebalanceUnderLoad(t *testing.T) {
	f := newItems(t, 3, 64, 20_000)
	ctx := context.Background()
	rb := f.rebalancer(t, RebalanceConfig{Batch: 4})
	spec := ShardSpec{Name: "s3", Nodes: []string{f.shards[3]}}
	l := f.startLoad(4, 2)
	time.Sleep(300 * time.Millisecond)
	plan, err := rb.AddShard(ctx, f.ks, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plan:\n%s", plan)
	if len(plan.Moves) != 16 {
		t.Fatalf("plan has %d moves, want 16 (64 buckets / 4 shards)", len(plan.Moves))
	}
	rep, err := rb.Run(ctx, f.ks)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	l.finish(t)
	t.Logf("rebalance: %d moves, %d rows in %s, longest hold %s", rep.Moves, rep.RowsCopied, rep.Elapsed, rep.LongestHold)
	if rep.Moves != 16 {
		t.Errorf("Run made %d moves, want 16", rep.Moves)
	}
	if l.writes.Load() == 0 {
		t.Error("no write succeeded during the rebalance")
	}
	f.verify(t)
	m, _ := f.store.Map(ctx, f.ks)
	n := 0
	for _, s := range m.Buckets {
		if s == "s3" {
			n++
		}
	}
	if n != 16 {
		t.Errorf("s3 owns %d buckets, want 16", n)
	}
	waitFor(t, "router follows the last map", func() bool { return f.router.Version() == m.Version })
	// Old versions can go; the latest stays.
	if n, err := f.store.Prune(ctx, f.ks, 2); err != nil || n != m.Version-2 {
		t.Errorf("Prune(keep 2) deleted %d versions (%v), want %d", n, err, m.Version-2)
	}
	if v, err := f.store.Version(ctx, f.ks); err != nil || v != m.Version {
		t.Errorf("after Prune the version is %d (%v), want %d", v, err, m.Version)
	}
	// A second run has nothing to do.
	if rep, err := rb.Run(ctx, f.ks); err != nil || rep.Moves != 0 {
		t.Errorf("second Run: %d moves, %v; want none", rep.Moves, err)
	}
}

func TestRebalanceResumesAfterKill(t *testing.T) {
	for _, phase := range []string{"copying", "frozen"} {
		t.Run("killed while "+phase, func(t *testing.T) {
			f := newItems(t, 2, 32, 5_000)
			ctx := context.Background()
			l := f.startLoad(2, 1)
			// 10 moves in batches of 2 per shard pair: 6 batches; kill in
			// the given phase of a random one.
			killAt, seen := rand.IntN(6), 0
			runCtx, kill := context.WithCancel(ctx)
			defer kill()
			rb := f.rebalancer(t, RebalanceConfig{Batch: 2, ReadGrace: 100 * time.Millisecond, Progress: func(p Progress) {
				if p.Phase == phase {
					if seen == killAt {
						kill()
					}
					seen++
				}
			}})
			if _, err := rb.AddShard(ctx, f.ks, ShardSpec{Name: "s2", Nodes: []string{f.shards[2]}}); err != nil {
				t.Fatal(err)
			}
			if _, err := rb.Run(runCtx, f.ks); !errors.Is(err, context.Canceled) {
				t.Fatalf("Run with its context cancelled = %v, want context.Canceled", err)
			}
			rb.Close()
			plan, err := rb.Plan(ctx, f.ks)
			if err != nil || !plan.Resumed || plan.Done >= 10 {
				t.Fatalf("after the kill: plan resumed=%v done=%d (%v), want an unfinished rebalance", plan.Resumed, plan.Done, err)
			}
			t.Logf("killed in batch %d while %s, with %d of 10 moves done", killAt, phase, plan.Done)
			killAt = plan.Done
			// The next run, by a new rebalancer, completes it.
			rb2 := f.rebalancer(t, RebalanceConfig{})
			rep, err := rb2.Run(ctx, f.ks)
			if err != nil {
				t.Fatalf("resumed Run: %v", err)
			}
			if got := killAt + rep.Moves; got != 10 {
				t.Errorf("moves done before and after the kill: %d + %d, want 10", killAt, rep.Moves)
			}
			time.Sleep(200 * time.Millisecond)
			l.finish(t)
			f.verify(t)
		})
	}
}

func TestRebalanceFailedMoveRollsBack(t *testing.T) {
	f := newItems(t, 2, 16, 2_000)
	ctx := context.Background()
	rb := f.rebalancer(t, RebalanceConfig{})
	plan, err := rb.AddShard(ctx, f.ks, ShardSpec{Name: "s2", Nodes: []string{f.shards[2]}})
	if err != nil {
		t.Fatal(err)
	}
	// The new shard refuses one row of a bucket in the middle of the plan:
	// that move fails midway.
	badBucket := plan.Moves[len(plan.Moves)/2].Bucket
	var badID int64 = -1
	for id, o := range f.owner {
		if f.router.Bucket(IntKey(o)) == badBucket {
			badID = id
			break
		}
	}
	bad := IntKey(f.owner[badID])
	db, _ := f.router.For(ctx, bad)
	if _, err := db.Exec(ctx, fmt.Sprintf("UPDATE %s SET val = -5 WHERE id = %d", f.table, badID)); err != nil {
		t.Fatal(err)
	}
	f.expect[badID] = -5
	execAll(t, f.shards[2:3], fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT nonneg CHECK (val >= 0)", f.table))
	_, err = rb.Run(ctx, f.ks)
	if err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("Run = %v, want the failed move rolled back", err)
	}
	m, _ := f.store.Map(ctx, f.ks)
	orig := NewHashMap(f.ks, 16, specs(f.shards, 2)...).Buckets[badBucket]
	if m.Buckets[badBucket] != orig || len(m.Frozen) != 0 {
		t.Fatalf("after rollback bucket %d is on %s (frozen %v), want %s, not frozen", badBucket, m.Buckets[badBucket], m.Frozen, orig)
	}
	f.verify(t)
	// Writes to the bucket work again at once.
	if err := f.router.Do(ctx, bad, func(db *replica.Cluster) error {
		_, err := db.Exec(ctx, fmt.Sprintf("UPDATE %s SET val = 5 WHERE id = %d", f.table, badID))
		return err
	}); err != nil {
		t.Fatalf("write to the rolled-back bucket: %v", err)
	}
	f.expect[badID] = 5
	// With the cause fixed, the next run completes the journaled rebalance.
	execAll(t, f.shards[2:3], fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT nonneg", f.table))
	if _, err := rb.Run(ctx, f.ks); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	f.verify(t)
}

func TestAbortRollsBackUnfinishedRebalance(t *testing.T) {
	f := newItems(t, 2, 16, 2_000)
	ctx := context.Background()
	runCtx, kill := context.WithCancel(ctx)
	defer kill()
	frozen := 0
	rb := f.rebalancer(t, RebalanceConfig{Batch: 1, ReadGrace: -1, Progress: func(p Progress) {
		if p.Phase == "frozen" {
			if frozen++; frozen == 3 {
				kill()
			}
		}
	}})
	if _, err := rb.AddShard(ctx, f.ks, ShardSpec{Name: "s2", Nodes: []string{f.shards[2]}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rb.Run(runCtx, f.ks); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	var out strings.Builder
	if err := RunRebalance(ctx, RebalanceCommand{MetaDSN: f.meta, Keyspace: f.ks, Abort: true, Logger: quiet,
		Rebalance: RebalanceConfig{Cluster: clusterConfig()}}, &out); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if !strings.Contains(out.String(), "rolled back") {
		t.Errorf("abort output: %q", out.String())
	}
	plan, err := rb.Plan(ctx, f.ks)
	if err != nil || plan.Resumed {
		t.Fatalf("after Abort: plan resumed=%v (%v), want no unfinished rebalance", plan.Resumed, err)
	}
	m, _ := f.store.Map(ctx, f.ks)
	moved := 0
	for _, s := range m.Buckets {
		if s == "s2" {
			moved++
		}
	}
	if moved != 2 {
		t.Errorf("after Abort s2 owns %d buckets, want the 2 moved before the kill", moved)
	}
	f.verify(t)
	// Writes to every bucket work.
	for o := int64(0); o < 64; o++ {
		if err := f.router.Do(ctx, IntKey(o), func(db *replica.Cluster) error {
			_, err := db.Exec(ctx, fmt.Sprintf("UPDATE %s SET val = val WHERE owner = $1", f.table), o)
			return err
		}); err != nil {
			t.Fatalf("write to owner %d after Abort: %v", o, err)
		}
	}
}

// A shard with a streaming replica: after the flip, reads routed to the
// replica find every moved row, because the flip waits for the replica
// to replay the copy.
func TestRebalanceToShardWithReplica(t *testing.T) {
	pg := testenv.StartPostgresCluster(t, 1)
	f := newItems(t, 2, 16, 2_000)
	ctx := context.Background()
	execAll(t, pg.DSNs()[:1], fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, owner bigint NOT NULL, bucket int NOT NULL, val bigint NOT NULL);
		CREATE INDEX ON %[1]s (bucket)`, f.table))
	rb := f.rebalancer(t, RebalanceConfig{ReadGrace: -1})
	if _, err := rb.AddShard(ctx, f.ks, ShardSpec{Name: "r2", Nodes: pg.DSNs()}); err != nil {
		t.Fatal(err)
	}
	rep, err := rb.Run(ctx, f.ks)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := f.store.Map(ctx, f.ks)
	waitFor(t, "router follows the last map", func() bool { return f.router.Version() == m.Version })
	checked := 0
	for id, o := range f.owner {
		if m.Buckets[f.router.Bucket(IntKey(o))] != "r2" {
			continue
		}
		db, _ := f.router.ForRead(ctx, IntKey(o))
		var val int64
		if err := db.QueryRow(ctx, fmt.Sprintf("SELECT val FROM %s WHERE id = $1", f.table), id).Scan(&val); err != nil || val != f.expect[id] {
			t.Fatalf("read of moved row %d through the router: %d, %v; want %d", id, val, err, f.expect[id])
		}
		checked++
	}
	st := f.router.Shards()[2].DB.Status()
	t.Logf("moved %d rows in %s; read %d of them back through the router, the replica served %d queries", rep.RowsCopied, rep.Elapsed, checked, st.Nodes[1].Queries)
	if checked == 0 || st.Nodes[1].Queries == 0 {
		t.Errorf("checked %d rows, replica served %d queries; want both > 0", checked, st.Nodes[1].Queries)
	}
	f.verify(t)
}
