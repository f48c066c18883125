package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Role is what a node was last found to be.
type Role uint8

const (
	// RoleUnknown: the node has not answered a check (yet).
	RoleUnknown Role = iota
	// RolePrimary: pg_is_in_recovery() is false.
	RolePrimary
	// RoleReplica: pg_is_in_recovery() is true (a hot standby).
	RoleReplica
)

// String returns "unknown", "primary" or "replica".
func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleReplica:
		return "replica"
	}
	return "unknown"
}

// MarshalText implements encoding.TextMarshaler with String.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// node is one PostgreSQL server of the cluster.
type node struct {
	addr    string // host:port/database, no credentials
	pool    *pgxpool.Pool
	connCfg *pgx.ConnConfig

	// checkConn is the dedicated connection of health checks, so that a
	// saturated pool does not fail them; only the checker touches it.
	checkConn *pgx.Conn

	down      atomic.Bool   // confirmed gone after a statement failed; cleared by a good check
	suspect   atomic.Bool   // a statement lost its connection; a confirmation is running
	replayLSN atomic.Uint64 // replica: last replayed LSN seen by a check
	rtt       atomic.Int64  // moving average of round trips, ns
	queries   atomic.Uint64
	errs      atomic.Uint64
	retries   atomic.Uint64 // reads retried elsewhere after failing here

	mu sync.Mutex
	st nodeState // guarded by mu
}

// nodeState is the outcome of the last check.
type nodeState struct {
	role       Role
	healthy    bool
	inRotation bool
	lagBytes   int64   // -1: unknown (no primary)
	lagSeconds float64 // -1: unknown
	lsn        uint64  // primary: insert LSN; replica: replay LSN
	checked    time.Time
	lastErr    string
}

func (n *node) state() nodeState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.st
}

// observeRTT folds one round trip into the moving average (weight 1/8).
// Concurrent updates may overwrite each other; the average stays sane.
func (n *node) observeRTT(d time.Duration) {
	old := n.rtt.Load()
	if old == 0 {
		n.rtt.Store(int64(d))
		return
	}
	n.rtt.Store(old + (int64(d)-old)/8)
}

// probe is what one check of one node found.
type probe struct {
	ok         bool
	inRecovery bool
	lsn        uint64
	receiveLSN uint64
	replaySecs float64 // seconds since last replayed commit, -1 if none
	err        error
}

// checkSQL asks a node for its role and WAL positions in one round trip.
// pg_current_wal_insert_lsn is the primary's position: any transaction
// that has committed is at or before it, even with synchronous_commit=off.
const checkSQL = `select pg_is_in_recovery(),
	(case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_insert_lsn() end)::text,
	coalesce(pg_last_wal_receive_lsn()::text, ''),
	coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp())::float8, -1)`

// check runs checkSQL on the node's dedicated connection, reconnecting
// if needed. Only the checker goroutine calls it.
func (n *node) check(ctx context.Context) probe {
	var (
		p             probe
		lsn, received string
		start         time.Time
	)
	// A check connection that was dropped (pg_terminate_backend, a
	// restarted pooler) while the node is fine must not fail the check:
	// one more try on a fresh connection.
	for attempt := 0; ; attempt++ {
		fresh := false
		if n.checkConn == nil || n.checkConn.IsClosed() {
			conn, err := pgx.ConnectConfig(ctx, n.connCfg)
			if err != nil {
				return probe{err: fmt.Errorf("connecting: %w", err)}
			}
			n.checkConn, fresh = conn, true
		}
		start = time.Now()
		err := n.checkConn.QueryRow(ctx, checkSQL).Scan(&p.inRecovery, &lsn, &received, &p.replaySecs)
		if err == nil {
			break
		}
		_ = n.checkConn.Close(context.Background())
		n.checkConn = nil
		if fresh || attempt > 0 || ctx.Err() != nil {
			return probe{err: err}
		}
	}
	n.observeRTT(time.Since(start))
	t, err := ParseToken(lsn)
	if err != nil {
		return probe{err: fmt.Errorf("reading WAL position: %w", err)}
	}
	p.lsn = uint64(t)
	if received != "" {
		if t, err := ParseToken(received); err == nil {
			p.receiveLSN = uint64(t)
		}
	}
	p.ok = true
	return p
}

// identity returns what tells one server from another: its system
// identifier (shared by a primary and the replicas cloned from it) and its
// postmaster's start time, on the check connection. Only the checker calls
// it, after a successful check.
func (n *node) identity(ctx context.Context) (string, error) {
	if n.checkConn == nil {
		return "", errors.New("no check connection")
	}
	var id string
	err := n.checkConn.QueryRow(ctx, `select 'system identifier ' || system_identifier || ', started ' || pg_postmaster_start_time()
		from pg_control_system()`).Scan(&id)
	return id, err
}

// alive reports whether a fresh connection to the node can be opened and
// answers a ping within ctx: the confirmation that a node whose connection
// was lost is still there.
func (n *node) alive(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, n.connCfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

func (n *node) close() {
	n.pool.Close()
	if n.checkConn != nil {
		_ = n.checkConn.Close(context.Background())
		n.checkConn = nil
	}
}

// nodeAddr names a node without its credentials.
func nodeAddr(cfg *pgconn.Config) string {
	return net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)) + "/" + cfg.Database
}

// nodeGone reports whether err means the node (or the connection to it)
// went away, rather than the statement failing on a healthy node.
func nodeGone(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// 08: connection exception; 57P01-57P03: admin/crash shutdown,
		// cannot connect now.
		return strings.HasPrefix(pgErr.Code, "08") ||
			pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) ||
		errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		(errors.As(err, &netErr) && !netErr.Timeout()) ||
		pgconn.SafeToRetry(err)
}

// readRetryable reports whether a read that failed with err before
// returning a row may run again on another node: the node went away, or a
// replica cancelled it for a conflict with recovery (SQLSTATE 40001).
func readRetryable(ctx context.Context, err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "40001" && ctx.Err() == nil {
		return true
	}
	return nodeGone(ctx, err)
}
