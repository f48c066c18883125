package replica

import (
	"context"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// BenchmarkRoutingDecision measures the routing decision alone, without
// any I/O: classifying the statement and choosing the node.
func BenchmarkRoutingDecision(b *testing.B) {
	newCluster := func(balance Balance) *Cluster {
		c := &Cluster{cfg: Config{Balance: balance}.withDefaults()}
		p, r1, r2 := &node{addr: "p"}, &node{addr: "r1"}, &node{addr: "r2"}
		r1.replayLSN.Store(1000)
		r2.replayLSN.Store(2000)
		r1.rtt.Store(int64(300 * time.Microsecond))
		r2.rtt.Store(int64(200 * time.Microsecond))
		c.nodes = []*node{p, r1, r2}
		c.route.Store(&routing{primary: p, rotation: []*node{r1, r2}})
		return c
	}
	const point = "select v from kv where id = $1"
	tests := []struct {
		name    string
		balance Balance
		ctx     context.Context
		sql     string
	}{
		{"read/round_robin", RoundRobin, context.Background(), point},
		{"read/least_latency", LeastLatency, context.Background(), point},
		{"read/token", RoundRobin, WithToken(context.Background(), 1500), point},
		{"read/primary_override", RoundRobin, Primary(context.Background()), point},
		{"write", RoundRobin, context.Background(), "update kv set v = $2 where id = $1"},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			c := newCluster(tc.balance)
			b.ReportAllocs()
			cpu0 := cpuNow(syscall.RUSAGE_SELF)
			for b.Loop() {
				var n *node
				var err error
				if !isPrimary(tc.ctx) && c.stmts.readOnly(tc.sql) {
					n, err = c.readNode(tc.ctx, nil)
				} else {
					n, err = c.writeNode()
				}
				if n == nil || err != nil {
					b.Fatal(n, err)
				}
			}
			b.ReportMetric(float64(cpuNow(syscall.RUSAGE_SELF)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// pointQuerySetup creates kv with 1000 rows on the shared cluster and waits
// until both replicas have it.
func pointQuerySetup(b *testing.B) (primaryDSN string, all []string) {
	pg := sharedPG(b)
	ctx := context.Background()
	c := open(b, Config{Nodes: pg.DSNs()})
	if _, err := c.Exec(ctx, `create table if not exists kv (id int primary key, v text);
		insert into kv select g, 'value ' || g from generate_series(1, 1000) g on conflict do nothing`); err != nil {
		b.Fatal(err)
	}
	tok, err := c.Token(ctx)
	if err != nil {
		b.Fatal(err)
	}
	waitFor(b, 20*time.Second, "replicas with kv", func() bool {
		st := c.Status()
		for _, n := range st.Nodes {
			if n.Role == RoleReplica && n.LSN < tok {
				return false
			}
		}
		return true
	})
	return pg.DSN(0), pg.DSNs()
}

// BenchmarkPointQuery runs a primary-key lookup through plain pgxpool and
// through a Cluster, on the same server (primary only: reads fall back to
// it) and spread over two replicas.
func BenchmarkPointQuery(b *testing.B) {
	primary, all := pointQuerySetup(b)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, primary)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	onlyPrimary := open(b, Config{Nodes: []string{primary}})
	spread := open(b, Config{Nodes: all})

	run := func(b *testing.B, q func(id int) error) {
		b.ReportAllocs()
		i := 0
		cpu0 := cpuNow(syscall.RUSAGE_SELF)
		for b.Loop() {
			i++
			if err := q(i%1000 + 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuNow(syscall.RUSAGE_SELF)-cpu0)/float64(b.N), "client-cpu-ns/op")
	}
	var v string
	const sql = "select v from kv where id = $1"
	b.Run("pgxpool", func(b *testing.B) {
		run(b, func(id int) error { return pool.QueryRow(ctx, sql, id).Scan(&v) })
	})
	b.Run("replica/primary_only", func(b *testing.B) {
		run(b, func(id int) error { return onlyPrimary.QueryRow(ctx, sql, id).Scan(&v) })
	})
	b.Run("replica/2_replicas", func(b *testing.B) {
		run(b, func(id int) error { return spread.QueryRow(ctx, sql, id).Scan(&v) })
	})
}

// BenchmarkRoutingOverhead alternates the same point query through plain
// pgxpool and through a Cluster over the same server, one of each per
// iteration (in alternating order), so that both see the same machine
// load. It reports the median time of each and the median of the per-pair
// differences: the per-query cost of replica's routing, robust to the
// outliers of a shared machine.
func BenchmarkRoutingOverhead(b *testing.B) {
	primary, _ := pointQuerySetup(b)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, primary)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	c := open(b, Config{Nodes: []string{primary}})
	const sql = "select v from kv where id = $1"
	var v string
	const maxSamples = 1 << 16
	plain := make([]int64, 0, maxSamples)
	routed := make([]int64, 0, maxSamples)
	diff := make([]int64, 0, maxSamples)
	plainCPU := make([]int64, 0, maxSamples)
	routedCPU := make([]int64, 0, maxSamples)
	diffCPU := make([]int64, 0, maxSamples)
	// The thread's CPU time counts this goroutine's work only.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	timed := func(q func() error) (wall, cpu time.Duration) {
		t0, c0 := time.Now(), cpuNow(rusageThread)
		if err := q(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0), cpuNow(rusageThread) - c0
	}
	var id int
	viaPool := func() error { return pool.QueryRow(ctx, sql, id).Scan(&v) }
	viaReplica := func() error { return c.QueryRow(ctx, sql, id).Scan(&v) }
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id = i%1000 + 1
		var p, r, pc, rc time.Duration
		if i%2 == 0 {
			p, pc = timed(viaPool)
			r, rc = timed(viaReplica)
		} else {
			r, rc = timed(viaReplica)
			p, pc = timed(viaPool)
		}
		if len(diff) < maxSamples {
			plain = append(plain, int64(p))
			routed = append(routed, int64(r))
			diff = append(diff, int64(r-p))
			plainCPU = append(plainCPU, int64(pc))
			routedCPU = append(routedCPU, int64(rc))
			diffCPU = append(diffCPU, int64(rc-pc))
		}
	}
	mp, mr, md := median(plain), median(routed), median(diff)
	b.ReportMetric(mp, "pgxpool-median-ns/query")
	b.ReportMetric(mr, "replica-median-ns/query")
	b.ReportMetric(md, "overhead-median-ns/query")
	b.ReportMetric(100*md/mp, "overhead-%")
	mpc, mrc := mean(plainCPU), mean(routedCPU)
	b.ReportMetric(mpc, "pgxpool-cpu-ns/query")
	b.ReportMetric(mrc, "replica-cpu-ns/query")
	b.ReportMetric(mrc-mpc, "overhead-cpu-ns/query")
}

// rusageThread is RUSAGE_THREAD: the calling thread's CPU time.
const rusageThread = 1

// cpuNow returns the CPU time (user + system) used so far by the process,
// or by the calling thread with who = rusageThread. On a shared machine,
// wall time per operation mostly measures the wait for a core; CPU time
// measures the work.
func cpuNow(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(xs []int64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return float64(s[len(s)/2])
}

func mean(xs []int64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var sum float64
	for _, x := range xs {
		sum += float64(x)
	}
	return sum / float64(len(xs))
}
