package replica

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/scaleout/scaleout/internal/testenv"
)

// serverPort runs "select inet_server_port()" through c and returns which
// server answered.
func serverPort(ctx context.Context, c *Cluster) (int, error) {
	var port int
	err := c.QueryRow(ctx, "select inet_server_port()").Scan(&port)
	return port, err
}

func TestRolesAndRouting(t *testing.T) {
	pg := sharedPG(t)
	ctx := context.Background()
	primary, r1, r2 := pg.Port(0), pg.Port(1), pg.Port(2)

	// Nodes in a scrambled order: roles come from the servers.
	c := open(t, Config{Nodes: []string{pg.DSN(2), pg.DSN(0), pg.DSN(1)}})
	if _, err := c.Exec(ctx, "create table if not exists routing (id serial primary key, port int)"); err != nil {
		t.Fatal(err)
	}
	st := c.Status()
	if st.Primary != fmt.Sprintf("127.0.0.1:%d/postgres", primary) {
		t.Fatalf("primary = %q, want port %d", st.Primary, primary)
	}

	t.Run("reads spread across both replicas", func(t *testing.T) {
		seen := map[int]int{}
		for range 100 {
			port, err := serverPort(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			seen[port]++
		}
		if seen[r1] == 0 || seen[r2] == 0 || seen[primary] != 0 {
			t.Fatalf("reads by port = %v, want both replicas %d and %d and not the primary %d", seen, r1, r2, primary)
		}
		if seen[r1] < 30 || seen[r2] < 30 {
			t.Fatalf("round robin is uneven: %v", seen)
		}
	})

	t.Run("writes land on the primary", func(t *testing.T) {
		var port int
		err := c.QueryRow(ctx, "insert into routing (port) values (inet_server_port()) returning port").Scan(&port)
		if err != nil || port != primary {
			t.Fatalf("insert ran on port %d (err %v), want primary %d", port, err, primary)
		}
		if _, err := c.Exec(ctx, "insert into routing (port) values (inet_server_port())"); err != nil {
			t.Fatal(err)
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if err := tx.QueryRow(ctx, "select inet_server_port()").Scan(&port); err != nil || port != primary {
			t.Fatalf("read in a transaction ran on %d (err %v), want primary %d", port, err, primary)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("writing and locking reads go to the primary", func(t *testing.T) {
		for _, sql := range []string{
			"select inet_server_port() from routing limit 1 for update",
			"select inet_server_port() from (select nextval('routing_id_seq')) s",
			"with n as (insert into routing (port) values (0) returning id) select inet_server_port() from n",
			"select inet_server_port() from (select pg_advisory_xact_lock(1)) s",
		} {
			var port int
			if err := c.QueryRow(ctx, sql).Scan(&port); err != nil || port != primary {
				t.Errorf("%s: ran on %d (err %v), want primary %d", sql, port, err, primary)
			}
		}
	})

	t.Run("Primary context overrides", func(t *testing.T) {
		for range 10 {
			port, err := serverPort(Primary(ctx), c)
			if err != nil || port != primary {
				t.Fatalf("read with Primary(ctx) ran on %d (err %v), want %d", port, err, primary)
			}
		}
	})

	t.Run("Read connection is on a replica", func(t *testing.T) {
		conn, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		var port int
		if err := conn.QueryRow(ctx, "select inet_server_port()").Scan(&port); err != nil {
			t.Fatal(err)
		}
		if port != r1 && port != r2 {
			t.Fatalf("Read gave a connection to %d, want a replica", port)
		}
	})

	t.Run("Query rows and errors", func(t *testing.T) {
		rows, err := c.Query(ctx, "select g from generate_series(1, 5) g")
		if err != nil {
			t.Fatal(err)
		}
		var sum int
		for rows.Next() {
			var g int
			if err := rows.Scan(&g); err != nil {
				t.Fatal(err)
			}
			sum += g
		}
		if rows.Err() != nil || sum != 15 {
			t.Fatalf("sum = %d, err %v", sum, rows.Err())
		}
		err = c.QueryRow(ctx, "select 1 where false").Scan(new(int))
		if !errors.Is(err, pgx.ErrNoRows) {
			t.Fatalf("empty QueryRow: err = %v, want pgx.ErrNoRows", err)
		}
		err = c.QueryRow(ctx, "select nosuchcolumn").Scan(new(int))
		if err == nil {
			t.Fatal("bad query: no error")
		}
		// pgx style: the error is in the rows too.
		rows, _ = c.Query(ctx, "select nosuchcolumn")
		if _, err := pgx.CollectRows(rows, pgx.RowTo[int]); err == nil {
			t.Fatal("CollectRows over a bad query: no error")
		}
		closed := open(t, Config{Nodes: pg.DSNs()})
		closed.Close()
		rows, err = closed.Query(ctx, "select 1")
		if !errors.Is(err, ErrClosed) || !errors.Is(rows.Err(), ErrClosed) {
			t.Fatalf("Query after Close: %v / %v, want ErrClosed in both", err, rows.Err())
		}
		if !nodeStatus(t, c, r1).Healthy || !nodeStatus(t, c, r2).Healthy {
			t.Fatal("a query error took a healthy replica out of rotation")
		}
	})

	t.Run("least latency reads only replicas", func(t *testing.T) {
		c := open(t, Config{Nodes: pg.DSNs(), Balance: LeastLatency})
		for range 20 {
			port, err := serverPort(ctx, c)
			if err != nil || port == primary {
				t.Fatalf("read ran on %d (err %v), want a replica", port, err)
			}
		}
	})

	t.Run("fallback to primary or fail", func(t *testing.T) {
		only := []string{pg.DSN(0)}
		c := open(t, Config{Nodes: only})
		if port, err := serverPort(ctx, c); err != nil || port != primary {
			t.Fatalf("read with no replica ran on %d (err %v), want primary", port, err)
		}
		if c.Status().ReadsToPrimary == 0 {
			t.Fatal("ReadsToPrimary not counted")
		}
		strict := open(t, Config{Nodes: only, NoFallback: true})
		if _, err := serverPort(ctx, strict); !errors.Is(err, ErrNoReplica) {
			t.Fatalf("read with NoFallback and no replica: err = %v, want ErrNoReplica", err)
		}
	})

	t.Run("idle replicas are not behind", func(t *testing.T) {
		// An idle primary's insert position sits past a page header that
		// no replica replays; that must not read as lag.
		waitFor(t, 10*time.Second, "replicas caught up", func() bool {
			return nodeStatus(t, c, r1).LagBytes == 0 && nodeStatus(t, c, r2).LagBytes == 0
		})
		time.Sleep(6 * 50 * time.Millisecond) // several checks of an idle cluster
		for _, port := range []int{r1, r2} {
			if st := nodeStatus(t, c, port); st.LagBytes != 0 || st.LagSeconds != 0 || !st.InRotation {
				t.Errorf("idle replica %+v: want no lag, in rotation", st)
			}
		}
	})

	t.Run("status and metrics", func(t *testing.T) {
		st := c.Status()
		roles := map[Role]int{}
		for _, n := range st.Nodes {
			roles[n.Role]++
			if !n.Healthy || n.Queries == 0 || n.PoolMax == 0 {
				t.Errorf("node %+v: want healthy, with queries and a pool", n)
			}
			if n.Role == RoleReplica && (n.LagBytes < 0 || n.LagSeconds < 0 || !n.InRotation) {
				t.Errorf("replica %+v: want known lag, in rotation", n)
			}
		}
		if roles[RolePrimary] != 1 || roles[RoleReplica] != 2 {
			t.Fatalf("roles = %v", roles)
		}
		reg := prometheus.NewRegistry()
		if err := reg.Register(c.Collector()); err != nil {
			t.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				key := mf.GetName()
				for _, l := range m.GetLabel() {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		pnode := fmt.Sprintf("node=127.0.0.1:%d/postgres", primary)
		rnode := fmt.Sprintf("node=127.0.0.1:%d/postgres", r1)
		for key, want := range map[string]float64{
			"scaleout_db_node_role," + pnode + ",role=primary": 1,
			"scaleout_db_node_role," + rnode + ",role=replica": 1,
			"scaleout_db_node_up," + rnode:                     1,
			"scaleout_db_node_in_rotation," + rnode:            1,
		} {
			if got[key] != want {
				t.Errorf("%s = %v, want %v", key, got[key], want)
			}
		}
		for _, key := range []string{"scaleout_db_replica_lag_bytes," + rnode, "scaleout_db_queries_total," + rnode,
			"scaleout_db_pool_conns," + rnode + ",state=max"} {
			if _, ok := got[key]; !ok {
				t.Errorf("metric %s missing", key)
			}
		}
	})

	t.Run("bad config", func(t *testing.T) {
		if _, err := Open(ctx, Config{}); err == nil {
			t.Fatal("Open with no nodes: no error")
		}
		if _, err := Open(ctx, Config{Nodes: []string{"postgres://x:notaport/db"}}); err == nil {
			t.Fatal("Open with a bad DSN: no error")
		}
		_, err := Open(ctx, Config{Nodes: []string{pg.DSN(0), pg.DSN(1), pg.DSN(0) + "&application_name=x"}})
		if err == nil || !strings.Contains(err.Error(), "Config.Nodes[2] is the same server as Config.Nodes[0]") {
			t.Fatalf("Open with a node twice: err = %v", err)
		}
	})
}

func TestReplicaStoppedUnderReadLoad(t *testing.T) {
	pg := sharedPG(t)
	ctx := context.Background()
	c := open(t, Config{Nodes: pg.DSNs(), MaxConns: 4})
	victim := pg.Port(2)

	var (
		reads, failures atomic.Int64
		firstErr        atomic.Value
		stop            = make(chan struct{})
		wg              sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := serverPort(ctx, c); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				reads.Add(1)
			}
		}()
	}
	waitFor(t, 10*time.Second, "reads before the stop", func() bool { return reads.Load() > 200 })
	stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := pg.Stop(stopCtx, 2); err != nil {
		t.Fatal(err)
	}
	before := reads.Load()
	waitFor(t, 10*time.Second, "reads after the stop", func() bool { return reads.Load() > before+500 })
	st := nodeStatus(t, c, victim)
	close(stop)
	wg.Wait()

	if failures.Load() != 0 {
		t.Fatalf("%d of %d reads failed for the caller; first: %v", failures.Load(), reads.Load(), firstErr.Load())
	}
	if st.Healthy || st.InRotation {
		t.Fatalf("stopped replica still healthy or in rotation: %+v", st)
	}
	t.Logf("%d reads, %d retried after failing on the stopped replica", reads.Load(), st.Retries)

	// It comes back into rotation once it is up again.
	if err := pg.Start(stopCtx, 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the restarted replica back in rotation", func() bool {
		return nodeStatus(t, c, victim).InRotation
	})
	waitFor(t, 10*time.Second, "a read on the restarted replica", func() bool {
		port, err := serverPort(ctx, c)
		return err == nil && port == victim
	})
}

// TestReadRetriedOnceAfterReplicaKilled pins the retry rule without a
// health check to help: the checks are far apart, so the only thing that
// takes the killed replica out is the failed read itself.
func TestReadRetriedOnceAfterReplicaKilled(t *testing.T) {
	pg := sharedPG(t)
	ctx := context.Background()
	c := open(t, Config{Nodes: pg.DSNs(), CheckInterval: time.Hour})
	survivor, victim := pg.Port(1), pg.Port(2)
	// Warm both replicas' pools.
	seen := map[int]bool{}
	for range 10 {
		port, err := serverPort(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		seen[port] = true
	}
	if !seen[survivor] || !seen[victim] {
		t.Fatalf("warm-up reads reached %v, want both replicas", seen)
	}

	if err := pg.Kill(2); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := pg.Start(sctx, 2); err != nil {
			t.Fatal(err)
		}
		if err := pg.WaitStreaming(sctx, 0, 2); err != nil {
			t.Fatal(err)
		}
	}()
	for i := range 20 {
		port, err := serverPort(ctx, c)
		if err != nil {
			t.Fatalf("read %d after the kill failed for the caller: %v", i, err)
		}
		if port != survivor {
			t.Fatalf("read %d ran on %d, want the surviving replica %d", i, port, survivor)
		}
	}
	// The failed read makes the replica suspect (no more reads there) and a
	// fresh connection, off the reader's path, confirms it gone.
	waitFor(t, 5*time.Second, "the killed replica out of rotation", func() bool {
		st := nodeStatus(t, c, victim)
		return !st.Healthy && !st.InRotation
	})
	if st := nodeStatus(t, c, victim); st.Retries != 1 {
		t.Fatalf("killed replica: %+v; want exactly 1 read retried elsewhere", st)
	}
}

func TestLaggingReplicaLeavesRotation(t *testing.T) {
	pg := sharedPG(t)
	ctx := context.Background()
	lagging, other := pg.Port(1), pg.Port(2)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"max lag seconds", Config{MaxLag: time.Second, MaxLagBytes: -1}},
		{"max lag bytes", Config{MaxLag: -1, MaxLagBytes: 4 << 20}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Nodes = pg.DSNs()
			c := open(t, cfg)
			if _, err := c.Exec(ctx, "create table if not exists lag (id serial, pad text) with (autovacuum_enabled = off)"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "replica in rotation", func() bool { return nodeStatus(t, c, lagging).InRotation })

			if err := pg.PauseReplay(ctx, 1); err != nil {
				t.Fatal(err)
			}
			resumed := false
			defer func() {
				if !resumed {
					_ = pg.ResumeReplay(ctx, 1)
				}
			}()
			// Write until the paused replica is out of rotation.
			waitFor(t, 15*time.Second, "the paused replica out of rotation", func() bool {
				if _, err := c.Exec(ctx, "insert into lag (pad) select repeat('x', 1000) from generate_series(1, 200)"); err != nil {
					t.Fatal(err)
				}
				return !nodeStatus(t, c, lagging).InRotation
			})
			// The other replica catches up once the writes stop.
			waitFor(t, 10*time.Second, "the other replica in rotation", func() bool {
				return nodeStatus(t, c, other).InRotation
			})
			st := nodeStatus(t, c, lagging)
			if !st.Healthy || st.LagBytes <= 0 {
				t.Fatalf("paused replica: %+v, want healthy with lag", st)
			}
			if cfg.MaxLag > 0 && st.LagSeconds <= cfg.MaxLag.Seconds() {
				t.Fatalf("paused replica evicted with lag %.3fs <= max %v", st.LagSeconds, cfg.MaxLag)
			}
			for range 30 {
				port, err := serverPort(ctx, c)
				if err != nil || port != other {
					t.Fatalf("read ran on %d (err %v), want only the caught-up replica %d; status %+v", port, err, other, c.Status())
				}
			}

			if err := pg.ResumeReplay(ctx, 1); err != nil {
				t.Fatal(err)
			}
			resumed = true
			waitFor(t, 15*time.Second, "the resumed replica back in rotation", func() bool {
				return nodeStatus(t, c, lagging).InRotation
			})
			waitFor(t, 5*time.Second, "a read on the resumed replica", func() bool {
				port, err := serverPort(ctx, c)
				return err == nil && port == lagging
			})
		})
	}
}

func TestReadYourWrites(t *testing.T) {
	pg := sharedPG(t)
	ctx := context.Background()
	c := open(t, Config{Nodes: pg.DSNs(), CheckInterval: 20 * time.Millisecond})
	if _, err := c.Exec(ctx, "create table if not exists ryw (id bigint primary key, v text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "create table if not exists ryw_load (id serial, pad text)"); err != nil {
		t.Fatal(err)
	}

	// Background write load keeps the replicas replaying.
	stopLoad := make(chan struct{})
	var loadWG sync.WaitGroup
	for range 2 {
		loadWG.Add(1)
		go func() {
			defer loadWG.Done()
			for i := 0; i < 100000; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				_, _ = c.Exec(ctx, "insert into ryw_load (pad) select repeat('y', 200) from generate_series(1, 20)")
			}
		}()
	}
	defer func() {
		close(stopLoad)
		loadWG.Wait()
	}()

	const pairs, workers = 1000, 8
	var (
		next       atomic.Int64
		onReplica  atomic.Int64
		stale      atomic.Int64
		firstStale atomic.Value
		wg         sync.WaitGroup
	)
	ports := map[int]bool{pg.Port(1): true, pg.Port(2): true}
	base := time.Now().UnixNano()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > pairs {
					return
				}
				id := base + i
				want := fmt.Sprintf("value %d", i)
				if _, err := c.Exec(ctx, "insert into ryw (id, v) values ($1, $2)", id, want); err != nil {
					t.Error(err)
					return
				}
				tok, err := c.Token(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				// The token travels as text, as in a cookie.
				back, err := ParseToken(tok.String())
				if err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					time.Sleep(time.Duration(i%40) * time.Millisecond) // let some reads find a caught-up replica
				}
				var got string
				var port int
				err = c.QueryRow(WithToken(ctx, back), "select v, inet_server_port() from ryw where id = $1", id).Scan(&got, &port)
				if err != nil || got != want {
					stale.Add(1)
					firstStale.CompareAndSwap(nil, fmt.Sprintf("pair %d: got %q on port %d, err %v", i, got, port, err))
					continue
				}
				if ports[port] {
					onReplica.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if stale.Load() != 0 {
		t.Fatalf("%d of %d reads did not see their write; first: %v", stale.Load(), pairs, firstStale.Load())
	}
	if onReplica.Load() == 0 {
		t.Fatalf("all %d token reads went to the primary; want replicas that have replayed the token to serve some", pairs)
	}
	t.Logf("%d of %d token reads served by replicas", onReplica.Load(), pairs)
}

func TestFailover(t *testing.T) {
	pg := testenv.StartPostgresCluster(t, 2)
	ctx := context.Background()
	c := open(t, Config{Nodes: pg.DSNs(), CheckInterval: 100 * time.Millisecond})
	if _, err := c.Exec(ctx, "create table f (id int primary key, port int)"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "replicas with the table", func() bool {
		var n int
		err := c.QueryRow(ctx, "select count(*) from f").Scan(&n)
		return err == nil
	})

	stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := pg.Stop(stopCtx, 0); err != nil {
		t.Fatal(err)
	}
	// The first write may fail with the connection's own error; from then
	// on, until a new primary is found, writes fail fast with ErrNoPrimary.
	waitFor(t, 10*time.Second, "ErrNoPrimary", func() bool {
		_, err := c.Exec(ctx, "insert into f values (0, inet_server_port())")
		return errors.Is(err, ErrNoPrimary)
	})
	for i := range 20 {
		if _, err := c.Exec(ctx, "insert into f values ($1, inet_server_port())", i+1); !errors.Is(err, ErrNoPrimary) {
			t.Fatalf("write %d with no primary: err = %v, want ErrNoPrimary", i, err)
		}
		if _, err := c.Begin(ctx); !errors.Is(err, ErrNoPrimary) {
			t.Fatalf("Begin with no primary: err = %v, want ErrNoPrimary", err)
		}
	}
	if c.Status().Primary != "" {
		t.Fatalf("Status().Primary = %q with the primary stopped", c.Status().Primary)
	}
	// Reads keep working on the replicas.
	if port, err := serverPort(ctx, c); err != nil || (port != pg.Port(1) && port != pg.Port(2)) {
		t.Fatalf("read during the outage ran on %d (err %v), want a replica", port, err)
	}

	if err := pg.Promote(ctx, 1); err != nil {
		t.Fatal(err)
	}
	id := 100
	waitFor(t, 15*time.Second, "a write to succeed after the promotion", func() bool {
		id++
		_, err := c.Exec(ctx, "insert into f values ($1, inet_server_port())", id)
		if err != nil && !errors.Is(err, ErrNoPrimary) {
			t.Fatalf("write during failover: err = %v, want nil or ErrNoPrimary", err)
		}
		return err == nil
	})
	var port int
	if err := c.QueryRow(Primary(ctx), "select port from f where id = $1", id).Scan(&port); err != nil || port != pg.Port(1) {
		t.Fatalf("write landed on %d (err %v), want the promoted node %d", port, err, pg.Port(1))
	}
	if want := fmt.Sprintf("127.0.0.1:%d/postgres", pg.Port(1)); c.Status().Primary != want {
		t.Fatalf("Status().Primary = %q, want %q", c.Status().Primary, want)
	}

	// The other replica, pointed at the new primary, serves reads again.
	if err := pg.Follow(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the other replica to see the write on the new timeline", func() bool {
		conn, err := pgx.Connect(ctx, pg.DSN(2))
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var n int
		return conn.QueryRow(ctx, "select count(*) from f where id = $1", id).Scan(&n) == nil && n == 1
	})
	waitFor(t, 10*time.Second, "the other replica in rotation with known lag", func() bool {
		st := nodeStatus(t, c, pg.Port(2))
		return st.InRotation && st.LagBytes >= 0
	})

	// The old primary comes back, not demoted (its replica now follows the
	// new primary): two nodes claim to be the primary, and writes are
	// refused rather than split between them.
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	if err := pg.Start(rctx, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the conflict to be seen", func() bool {
		return c.Status().Primary == ""
	})
	if _, err := c.Exec(ctx, "insert into f values (-1, inet_server_port())"); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("write with two primaries: err = %v, want ErrNoPrimary", err)
	}
	if err := pg.Stop(rctx, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the promoted node as the only primary again", func() bool {
		return c.Status().Primary == fmt.Sprintf("127.0.0.1:%d/postgres", pg.Port(1))
	})
}
