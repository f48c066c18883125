package replica

import (
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrNoPrimary: no node is known to be the primary (none reachable
	// reports pg_is_in_recovery() = false, or more than one does), or the
	// primary could not be reached before the statement was sent. The
	// statement was not run; nothing was queued.
	ErrNoPrimary = errors.New("replica: no primary")
	// ErrNoReplica: a read found no healthy, caught-up replica and
	// Config.NoFallback forbids reading from the primary.
	ErrNoReplica = errors.New("replica: no replica available for reads")
	// ErrClosed: the Cluster was closed.
	ErrClosed = errors.New("replica: cluster closed")
)

// Balance chooses among the replicas in the read rotation.
type Balance uint8

const (
	// RoundRobin takes the replicas in turn.
	RoundRobin Balance = iota
	// LeastLatency takes the replica with the lowest moving average of
	// round-trip time, measured by every health check and every read.
	LeastLatency
)

// String returns "round_robin" or "least_latency".
func (b Balance) String() string {
	if b == LeastLatency {
		return "least_latency"
	}
	return "round_robin"
}

// Config configures a Cluster. Only Nodes is required: the zero value of
// every other field means its documented default.
type Config struct {
	// Nodes are the connection strings (pgx DSN or URL) of every node of
	// the cluster, primary and replicas, in any order: the roles are
	// discovered by asking each node pg_is_in_recovery(), not taken from
	// here.
	Nodes []string

	// Balance is how reads are spread over the replicas. By default,
	// RoundRobin.
	Balance Balance

	// NoFallback makes a read fail with ErrNoReplica when no replica is
	// healthy and caught up. By default (false), such a read goes to the
	// primary. Reads carrying a token that no replica has reached go to the
	// primary either way.
	NoFallback bool

	// MaxLag is how far behind in time (see NodeStatus.LagSeconds) a
	// replica may be and stay in the read rotation. By default, 5s;
	// negative means no limit.
	MaxLag time.Duration

	// MaxLagBytes is how far behind the primary's WAL position, in bytes of
	// WAL not yet replayed, a replica may be and stay in the read rotation.
	// By default, 16 MiB; negative means no limit.
	MaxLagBytes int64

	// CheckInterval is how often every node's role, health and lag are
	// checked. A check also runs, at most every CheckInterval/4, after a
	// statement fails because a node went away. By default, 1s.
	CheckInterval time.Duration

	// CheckTimeout bounds one node's check. By default, 2s.
	CheckTimeout time.Duration

	// MaxConns is the size of each node's connection pool. By default,
	// pgxpool's default (the larger of 4 and the number of CPUs), or
	// pool_max_conns from the DSN.
	MaxConns int32

	// ConfigurePool, if not nil, is called with each node's pool
	// configuration before the pool is created, to set anything pgxpool
	// offers (AfterConnect, TLS, tracers...). By default, nothing.
	ConfigurePool func(*pgxpool.Config)

	// Logger receives role changes, nodes going down and coming back.
	// By default, slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxLag == 0 {
		c.MaxLag = 5 * time.Second
	}
	if c.MaxLagBytes == 0 {
		c.MaxLagBytes = 16 << 20
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = time.Second
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
