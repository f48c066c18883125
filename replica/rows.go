package replica

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// rows wraps the rows of one node's connection: it releases the
// connection when the rows end, counts errors against the node, and for a
// read that fails before its first row because the node went away, runs
// the read again once on another node.
type rows struct {
	pgx.Rows
	c    *Cluster
	ctx  context.Context
	sql  string
	args []any

	n    *node
	conn *pgxpool.Conn

	read    bool // may be retried on another node
	retried bool
	seen    bool // a row was returned: too late to retry
	done    bool
	err     error
}

// start runs the read on a node chosen by readNode, other than except,
// retrying once on another node if the chosen one cannot be reached.
func (r *rows) start(except *node) error {
	var first error
	for {
		n, err := r.c.readNode(r.ctx, except)
		if err != nil {
			if first != nil {
				return fmt.Errorf("%w (no other node to retry on: %w)", first, err)
			}
			return err
		}
		var began time.Time
		if r.c.cfg.Balance == LeastLatency {
			began = time.Now()
		}
		conn, err := n.pool.Acquire(r.ctx)
		if err == nil {
			n.queries.Add(1)
			var rs pgx.Rows
			rs, err = conn.Query(r.ctx, r.sql, r.args...)
			if err == nil {
				if !began.IsZero() {
					n.observeRTT(time.Since(began))
				}
				r.n, r.conn, r.Rows = n, conn, rs
				return nil
			}
			conn.Release()
		}
		r.c.observe(r.ctx, n, err)
		if r.retried || !readRetryable(r.ctx, err) {
			if first != nil {
				return fmt.Errorf("%w (retried on %s: %w)", first, n.addr, err)
			}
			return err
		}
		r.retried = true
		n.retries.Add(1)
		except, first = n, err
	}
}

// Next advances to the next row, retrying the read elsewhere if it failed
// before any row because its node went away.
func (r *rows) Next() bool {
	if r.done {
		return false
	}
	if r.Rows.Next() {
		r.seen = true
		return true
	}
	err := r.Rows.Err()
	if err != nil && r.read && !r.seen && !r.retried && readRetryable(r.ctx, err) {
		failed := r.n
		r.release()
		r.c.observe(r.ctx, failed, err)
		r.retried = true
		failed.retries.Add(1)
		if e := r.start(failed); e != nil {
			r.err = fmt.Errorf("%w (no other node to retry on: %w)", err, e)
			r.done = true
			return false
		}
		return r.Next()
	}
	r.finish(err)
	return false
}

// Err returns the error that ended the rows, if any.
func (r *rows) Err() error {
	if r.err != nil {
		return r.err
	}
	if r.Rows == nil {
		return nil
	}
	return r.Rows.Err()
}

// Close closes the rows and returns the connection to its pool. It is
// safe to call more than once.
func (r *rows) Close() {
	if r.done {
		return
	}
	r.Rows.Close()
	r.finish(r.Rows.Err())
}

func (r *rows) release() {
	if r.Rows != nil {
		r.Rows.Close()
	}
	if r.conn != nil {
		r.conn.Release()
		r.conn = nil
	}
}

func (r *rows) finish(err error) {
	if r.done {
		return
	}
	r.done = true
	r.release()
	r.c.observe(r.ctx, r.n, err)
}

// errRows is the pgx.Rows returned with an error, so that callers who
// ignore Query's error (as pgx allows, e.g. for pgx.CollectRows) get the
// error from the rows instead of a nil pointer.
type errRows struct{ err error }

func (e errRows) Close()                                       {}
func (e errRows) Err() error                                   { return e.err }
func (e errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (e errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (e errRows) Next() bool                                   { return false }
func (e errRows) Scan(...any) error                            { return e.err }
func (e errRows) Values() ([]any, error)                       { return nil, e.err }
func (e errRows) RawValues() [][]byte                          { return nil }
func (e errRows) Conn() *pgx.Conn                              { return nil }
func (e errRows) TypeMap() *pgtype.Map                         { return nil }

var _ pgx.Rows = errRows{}
