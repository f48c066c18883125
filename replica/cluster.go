package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Cluster is one handle to a PostgreSQL primary and its replicas. Create it
// with Open; all its methods are safe for concurrent use.
type Cluster struct {
	cfg   Config
	nodes []*node

	route atomic.Pointer[routing]
	stmts stmtCache
	rr    atomic.Uint64

	readsToPrimary atomic.Uint64
	noPrimary      atomic.Uint64

	history walHistory      // the primary's positions over time; checker only
	kick    chan struct{}   // asks the checker for an early check
	life    context.Context // cancelled by Close
	cancel  context.CancelFunc
	done    chan struct{}
	closed  atomic.Bool
	once    sync.Once

	bgMu     sync.Mutex     // orders bg.Add against Close's bg.Wait
	bgClosed bool           // guarded by bgMu
	bg       sync.WaitGroup // confirmations in flight
}

// routing is the immutable outcome of one check round, swapped atomically.
type routing struct {
	primary  *node   // nil: no primary
	rotation []*node // replicas serving reads
	why      string  // why there is no primary
	dup      string  // the same server is listed twice in Config.Nodes
}

// Open creates a pool per node, runs the first role check (bounded by ctx
// and Config.CheckTimeout) and starts re-checking every
// Config.CheckInterval. It fails only on bad configuration: a cluster whose
// nodes are all down opens, answers ErrNoPrimary, and finds them as they
// come up.
func Open(ctx context.Context, cfg Config) (*Cluster, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("replica: Config.Nodes is empty")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("replica: Open: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &Cluster{cfg: cfg, kick: make(chan struct{}, 1), done: make(chan struct{})}
	c.route.Store(&routing{why: "not checked yet"})
	for i, dsn := range cfg.Nodes {
		pcfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			c.closeNodes()
			return nil, fmt.Errorf("replica: Config.Nodes[%d]: %w", i, err)
		}
		if cfg.MaxConns > 0 {
			pcfg.MaxConns = cfg.MaxConns
		}
		if cfg.ConfigurePool != nil {
			cfg.ConfigurePool(pcfg)
		}
		pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
		if err != nil {
			c.closeNodes()
			return nil, fmt.Errorf("replica: Config.Nodes[%d]: %w", i, err)
		}
		addr := nodeAddr(&pcfg.ConnConfig.Config)
		for j, n := range c.nodes {
			if n.addr == addr {
				pool.Close()
				c.closeNodes()
				// Two handles on one primary would read as two primaries.
				return nil, fmt.Errorf("replica: Config.Nodes[%d] is the same server as Config.Nodes[%d] (%s)", i, j, addr)
			}
		}
		c.nodes = append(c.nodes, &node{
			addr:    addr,
			pool:    pool,
			connCfg: pcfg.ConnConfig.Copy(),
		})
	}
	c.life, c.cancel = context.WithCancel(context.Background())
	c.checkAll(ctx)
	go c.loop(c.life)
	return c, nil
}

// Close stops the checks and closes every pool, waiting for connections in
// use to be released. Statements after Close fail with ErrClosed.
func (c *Cluster) Close() {
	c.once.Do(func() {
		c.closed.Store(true)
		c.cancel()
		<-c.done
		c.bgMu.Lock()
		c.bgClosed = true
		c.bgMu.Unlock()
		c.bg.Wait()
		c.closeNodes()
	})
}

func (c *Cluster) closeNodes() {
	for _, n := range c.nodes {
		n.close()
	}
}

// loop re-checks every CheckInterval, and early (at most every quarter
// interval) when a statement found a node gone.
func (c *Cluster) loop(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.cfg.CheckInterval)
	defer t.Stop()
	minGap := c.cfg.CheckInterval / 4
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
			if wait := minGap - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		c.checkAll(ctx)
		last = time.Now()
	}
}

// checkAll checks every node at once and publishes the new routing.
func (c *Cluster) checkAll(ctx context.Context) {
	probes := make([]probe, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, c.cfg.CheckTimeout)
			defer cancel()
			probes[i] = n.check(cctx)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil && c.closed.Load() {
		return
	}

	var primaries []*node
	var primaryLSN uint64
	for i, p := range probes {
		if p.ok && !p.inRecovery {
			primaries = append(primaries, c.nodes[i])
			primaryLSN = recordEnd(p.lsn)
		}
	}
	r := &routing{}
	switch len(primaries) {
	case 1:
		r.primary = primaries[0]
	case 0:
		r.why = "no reachable node reports pg_is_in_recovery() = false"
	default:
		r.primary, r.why, r.dup = c.samePrimary(ctx, primaries)
	}

	now := time.Now()
	prev := c.route.Load()
	if prev.primary != r.primary || prev.why != r.why {
		c.history.reset()
		switch {
		case r.primary != nil:
			c.cfg.Logger.Warn("replica: primary found", "node", r.primary.addr)
		case r.dup != "":
			c.cfg.Logger.Error("replica: the same server is listed more than once in Config.Nodes; writes refused", "reason", r.why)
		case len(primaries) > 1:
			c.cfg.Logger.Error("replica: more than one node claims to be the primary; writes refused", "nodes", len(primaries))
		default:
			c.cfg.Logger.Error("replica: no primary; writes refused", "reason", r.why)
		}
	}
	if r.dup != "" && r.primary != nil && r.dup != prev.dup {
		c.cfg.Logger.Warn("replica: the same server is listed more than once in Config.Nodes; using it once", "detail", r.dup)
	}
	if r.primary != nil {
		c.history.add(now, primaryLSN)
	}
	for i, n := range c.nodes {
		p := probes[i]
		st := nodeState{checked: now, lagBytes: -1, lagSeconds: -1}
		if p.ok {
			st.healthy = true
			st.lsn = p.lsn
			if p.inRecovery {
				st.role = RoleReplica
				n.replayLSN.Store(p.lsn)
				if r.primary != nil {
					st.lagBytes = 0
					if primaryLSN > p.lsn {
						st.lagBytes = int64(primaryLSN - p.lsn)
					}
				}
				st.lagSeconds = 0
				switch {
				case r.primary != nil:
					st.lagSeconds = c.history.behind(p.lsn, now).Seconds()
				case p.receiveLSN > p.lsn && p.replaySecs > 0:
					// No primary to compare with: time since the last
					// replayed commit, while WAL waits to be replayed.
					st.lagSeconds = p.replaySecs
				}
				st.inRotation = (c.cfg.MaxLag < 0 || st.lagSeconds <= c.cfg.MaxLag.Seconds()) &&
					(c.cfg.MaxLagBytes < 0 || st.lagBytes <= c.cfg.MaxLagBytes)
				if st.inRotation {
					r.rotation = append(r.rotation, n)
				}
			} else {
				st.role = RolePrimary
				switch {
				case r.primary == nil && len(primaries) > 1:
					st.lastErr = r.why
				case r.primary != nil && r.primary != n:
					st.lastErr = r.dup
				}
			}
		} else {
			st.lastErr = p.err.Error()
		}
		n.mu.Lock()
		old := n.st
		n.st = st
		n.mu.Unlock()
		if p.ok {
			n.down.Store(false)
		}
		c.logChange(n, old, st)
	}
	c.route.Store(r)
}

// samePrimary decides between several nodes that report not being in
// recovery. Listing one server twice in Config.Nodes (as 127.0.0.1 and as
// localhost, say) is not a split brain: nodes whose server has the same
// identity (system identifier and postmaster start time; a promoted
// replica shares the first but not the second) are that one server. If
// they all are one server under one database, it is the primary, used
// once, and dup says so; under different databases, writes are refused
// with a message naming the entries. Otherwise writes are refused until
// all but one are demoted. Only the checker calls it.
func (c *Cluster) samePrimary(ctx context.Context, primaries []*node) (primary *node, why, dup string) {
	ids := make([]string, len(primaries))
	for i, n := range primaries {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.CheckTimeout)
		ids[i], _ = n.identity(cctx)
		cancel()
	}
	index := func(n *node) int {
		for i, m := range c.nodes {
			if m == n {
				return i
			}
		}
		return -1
	}
	one := true
	for i := 1; i < len(primaries); i++ {
		if ids[i] == "" || ids[i] != ids[0] || primaries[i].connCfg.Database != primaries[0].connCfg.Database {
			one = false
		}
	}
	if one && ids[0] != "" {
		a, b := primaries[0], primaries[1]
		return a, "", fmt.Sprintf("Config.Nodes[%d] (%s) and Config.Nodes[%d] (%s) are the same server (%s)",
			index(a), a.addr, index(b), b.addr, ids[0])
	}
	for i := range primaries {
		for j := i + 1; j < len(primaries); j++ {
			if ids[i] != "" && ids[i] == ids[j] {
				a, b := primaries[i], primaries[j]
				msg := fmt.Sprintf("Config.Nodes[%d] (%s) and Config.Nodes[%d] (%s) are the same server (%s) listed twice in Config.Nodes, with different databases; list each server once",
					index(a), a.addr, index(b), b.addr, ids[i])
				return nil, msg, msg
			}
		}
	}
	return nil, fmt.Sprintf("%d nodes report pg_is_in_recovery() = false; refusing writes until one is demoted", len(primaries)), ""
}

func (c *Cluster) logChange(n *node, old, st nodeState) {
	log := c.cfg.Logger
	switch {
	case old.healthy && !st.healthy:
		log.Warn("replica: node down", "node", n.addr, "err", st.lastErr)
	case !old.healthy && st.healthy:
		log.Info("replica: node up", "node", n.addr, "role", st.role.String())
	case old.role != st.role && st.healthy:
		log.Warn("replica: node changed role", "node", n.addr, "from", old.role.String(), "to", st.role.String())
	case old.role == RoleReplica && old.inRotation != st.inRotation:
		log.Info("replica: read rotation changed", "node", n.addr, "in_rotation", st.inRotation,
			"lag_bytes", st.lagBytes, "lag_seconds", st.lagSeconds)
	}
}

// nodeFailed takes n out of routing until the next good check, drops its
// pooled connections (they are as dead as it is) and asks for a check.
func (c *Cluster) nodeFailed(n *node) {
	if n.down.CompareAndSwap(false, true) {
		n.pool.Reset()
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// confirmTimeout bounds the fresh connection that confirms a node gone.
func (c *Cluster) confirmTimeout() time.Duration {
	return min(c.cfg.CheckTimeout, time.Second)
}

// suspect reacts to a statement that lost its connection to n. A lost
// connection is not a lost node (pg_terminate_backend, a pooler or
// firewall dropping an idle connection), so n stays in routing while a
// fresh connection, off the caller's path, confirms it: if that fails
// too, n is taken out (nodeFailed). Meanwhile reads avoid n when another
// node can serve them; writes keep going to it, each on a connection of
// its own, since a dead primary fails them fast at connect anyway.
func (c *Cluster) suspect(n *node) {
	if n.down.Load() || !n.suspect.CompareAndSwap(false, true) {
		return
	}
	c.bgMu.Lock()
	if c.bgClosed {
		c.bgMu.Unlock()
		n.suspect.Store(false)
		return
	}
	c.bg.Add(1)
	c.bgMu.Unlock()
	go func() {
		defer c.bg.Done()
		defer n.suspect.Store(false)
		ctx, cancel := context.WithTimeout(c.life, c.confirmTimeout())
		defer cancel()
		err := n.alive(ctx)
		if c.life.Err() != nil {
			return
		}
		if err != nil {
			c.cfg.Logger.Warn("replica: node unreachable after a statement lost its connection", "node", n.addr, "err", err)
			c.nodeFailed(n)
		}
	}()
}

// observe counts a statement's outcome on n and reacts to n going away.
// A failed connect (from Acquire: no connection could be opened) takes n
// out at once; a statement that lost an established connection makes n
// suspect until a fresh connection confirms it is gone or not.
func (c *Cluster) observe(ctx context.Context, n *node, err error) {
	if err == nil {
		return
	}
	n.errs.Add(1)
	if !nodeGone(ctx, err) {
		return
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		c.nodeFailed(n)
		return
	}
	c.suspect(n)
}

// writeNode returns the primary, or ErrNoPrimary.
func (c *Cluster) writeNode() (*node, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	r := c.route.Load()
	if r.primary == nil {
		c.noPrimary.Add(1)
		return nil, fmt.Errorf("%w: %s", ErrNoPrimary, r.why)
	}
	if r.primary.down.Load() {
		c.noPrimary.Add(1)
		return nil, fmt.Errorf("%w: %s went away, waiting for the next check", ErrNoPrimary, r.primary.addr)
	}
	return r.primary, nil
}

// readNode chooses the node for a read: a replica in rotation that is not
// except and has replayed ctx's token, else the primary (when allowed).
func (c *Cluster) readNode(ctx context.Context, except *node) (*node, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if isPrimary(ctx) {
		return c.writeNode()
	}
	r := c.route.Load()
	tok := uint64(TokenFrom(ctx))
	if n := c.pickReplica(r.rotation, tok, except); n != nil {
		return n, nil
	}
	if tok == 0 && c.cfg.NoFallback {
		return nil, ErrNoReplica
	}
	if r.primary == nil || r.primary == except || r.primary.down.Load() {
		c.noPrimary.Add(1)
		return nil, fmt.Errorf("%w and %w: %s", ErrNoReplica, ErrNoPrimary, r.why)
	}
	c.readsToPrimary.Add(1)
	return r.primary, nil
}

func (c *Cluster) pickReplica(rot []*node, tok uint64, except *node) *node {
	k := len(rot)
	if k == 0 {
		return nil
	}
	eligible := func(n *node) bool {
		return n != except && !n.down.Load() && n.replayLSN.Load() >= tok
	}
	// A suspect replica (a statement lost its connection there; a fresh
	// connection is checking it) is taken only when no other one is.
	var fallback *node
	if c.cfg.Balance == LeastLatency {
		var best *node
		var bestRTT int64
		for _, n := range rot {
			if !eligible(n) {
				continue
			}
			if n.suspect.Load() {
				fallback = n
				continue
			}
			if rtt := n.rtt.Load(); best == nil || rtt < bestRTT {
				best, bestRTT = n, rtt
			}
		}
		if best == nil {
			return fallback
		}
		return best
	}
	start := int(c.rr.Add(1) % uint64(k))
	for i := 0; i < k; i++ {
		if n := rot[(start+i)%k]; eligible(n) {
			if !n.suspect.Load() {
				return n
			}
			if fallback == nil {
				fallback = n
			}
		}
	}
	return fallback
}

// acquireWrite acquires a connection to the primary; an unreachable
// primary is ErrNoPrimary, since nothing was sent.
func (c *Cluster) acquireWrite(ctx context.Context) (*node, *pgxpool.Conn, error) {
	n, err := c.writeNode()
	if err != nil {
		return nil, nil, err
	}
	conn, err := n.pool.Acquire(ctx)
	if err != nil {
		c.observe(ctx, n, err)
		if nodeGone(ctx, err) {
			c.noPrimary.Add(1)
			return nil, nil, fmt.Errorf("%w: %s: %w", ErrNoPrimary, n.addr, err)
		}
		return nil, nil, err
	}
	n.queries.Add(1)
	return n, conn, nil
}

// Exec runs sql on the primary, whatever it is. With no known or reachable
// primary it fails at once with an error wrapping ErrNoPrimary and nothing
// sent. An error after sending is returned as it came (the statement may
// or may not have run).
func (c *Cluster) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	n, conn, err := c.acquireWrite(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := conn.Exec(ctx, sql, args...)
	conn.Release()
	c.observe(ctx, n, err)
	if err != nil && nodeGone(ctx, err) && pgconn.SafeToRetry(err) {
		// Nothing was sent: once more, on another connection.
		if n, conn, err = c.acquireWrite(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
		tag, err = conn.Exec(ctx, sql, args...)
		conn.Release()
		c.observe(ctx, n, err)
		if err != nil && nodeGone(ctx, err) && pgconn.SafeToRetry(err) {
			c.noPrimary.Add(1)
			return tag, fmt.Errorf("%w: %s: %w", ErrNoPrimary, n.addr, err)
		}
	}
	return tag, err
}

// Begin starts a transaction on the primary; see BeginTx.
func (c *Cluster) Begin(ctx context.Context) (pgx.Tx, error) {
	return c.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx starts a transaction on the primary: every statement of a
// transaction runs there, read-only or not. The connection returns to the
// pool on Commit or Rollback. With no reachable primary it fails with an
// error wrapping ErrNoPrimary.
func (c *Cluster) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	n, conn, err := c.acquireWrite(ctx)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		t, err := conn.BeginTx(ctx, opts)
		if err == nil {
			return &tx{Tx: t, conn: conn}, nil
		}
		conn.Release()
		c.observe(ctx, n, err)
		if !nodeGone(ctx, err) || !pgconn.SafeToRetry(err) {
			return nil, err
		}
		if attempt > 0 {
			c.noPrimary.Add(1)
			return nil, fmt.Errorf("%w: %s: %w", ErrNoPrimary, n.addr, err)
		}
		// Nothing was sent: once more, on another connection.
		if n, conn, err = c.acquireWrite(ctx); err != nil {
			return nil, err
		}
	}
}

// tx releases its pool connection when it ends, like pgxpool's.
type tx struct {
	pgx.Tx
	conn *pgxpool.Conn
}

func (t *tx) release() {
	if t.conn != nil {
		t.conn.Release()
		t.conn = nil
	}
}

func (t *tx) Commit(ctx context.Context) error {
	err := t.Tx.Commit(ctx)
	t.release()
	return err
}

func (t *tx) Rollback(ctx context.Context) error {
	err := t.Tx.Rollback(ctx)
	t.release()
	return err
}

// Token returns a read-your-writes token: the primary's WAL insert
// position now, which every transaction committed before the call is at or
// before. Call it after a write commits and pass it to WithToken (or set
// its String form in a cookie) so later reads see the write.
func (c *Cluster) Token(ctx context.Context) (Token, error) {
	n, conn, err := c.acquireWrite(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	var s string
	err = conn.QueryRow(ctx, "select pg_current_wal_insert_lsn()::text").Scan(&s)
	c.observe(ctx, n, err)
	if err != nil {
		return 0, fmt.Errorf("replica: reading WAL position: %w", err)
	}
	t, err := ParseToken(s)
	return Token(recordEnd(uint64(t))), err
}

// Read acquires a connection for reads, chosen as Query chooses for a
// read-only statement (a replica in rotation that has replayed ctx's token,
// else the primary unless Config.NoFallback): for several reads on one
// node, such as a REPEATABLE READ READ ONLY transaction on a replica.
// Statements on it are not classified; a write on a replica fails there.
// The caller must Release it.
func (c *Cluster) Read(ctx context.Context) (*pgxpool.Conn, error) {
	n, err := c.readNode(ctx, nil)
	if err != nil {
		return nil, err
	}
	conn, err := n.pool.Acquire(ctx)
	if err != nil && readRetryable(ctx, err) {
		c.observe(ctx, n, err)
		n.retries.Add(1)
		n, err = c.readNode(ctx, n)
		if err != nil {
			return nil, err
		}
		conn, err = n.pool.Acquire(ctx)
	}
	if err != nil {
		c.observe(ctx, n, err)
		return nil, err
	}
	n.queries.Add(1)
	return conn, nil
}

// Query runs sql and returns its rows. A statement IsReadOnly accepts goes
// to a replica in the read rotation that has replayed ctx's token (see
// WithToken), chosen by Config.Balance, else to the primary unless
// Config.NoFallback; any other statement, or any statement under a
// context from Primary, goes to the primary. A read that fails before its
// first row because its node went away (or was cancelled by a replica's
// recovery conflict) is retried once on another node, transparently.
// If there is an error, the returned rows hold it too, as in pgx, so that
// rows, _ := c.Query(…); pgx.CollectRows(rows, …) reports it.
func (c *Cluster) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r := &rows{c: c, ctx: ctx, sql: sql, args: args}
	if isPrimary(ctx) || !c.stmts.readOnly(sql) {
		n, conn, err := c.acquireWrite(ctx)
		if err != nil {
			return errRows{err}, err
		}
		r.n, r.conn = n, conn
		r.Rows, err = conn.Query(ctx, sql, args...)
		if err != nil {
			r.finish(err)
			return errRows{err}, err
		}
		return r, nil
	}
	r.read = true
	if err := r.start(nil); err != nil {
		return errRows{err}, err
	}
	return r, nil
}

// QueryRow is Query for at most one row; errors are deferred to Scan,
// which returns pgx.ErrNoRows when there is no row.
func (c *Cluster) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rs, err := c.Query(ctx, sql, args...)
	return &row{rows: rs, err: err}
}

type row struct {
	rows pgx.Rows
	err  error
}

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
