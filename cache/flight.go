package cache

import (
	"context"
	"sync"
)

// flight coalesces concurrent loads of one key on this node: the first
// caller starts the load on its own goroutine and every caller, the first
// included, waits for it or for its own context. The load's context is
// cancelled when every caller has given up, so an abandoned load stops.
type flight struct {
	// closing, when done, cancels every load; wg counts running loads.
	closing context.Context
	wg      sync.WaitGroup

	mu     sync.Mutex
	calls  map[string]*call
	closed bool // no new loads; set by close
}

type call struct {
	done    chan struct{}
	item    Item
	err     error
	waiters int // guarded by flight.mu
	cancel  context.CancelFunc
}

// do runs load once for all concurrent callers with the same key. joined
// reports whether this caller waited on a load another caller started.
func (f *flight) do(ctx context.Context, key string, load func(context.Context) (Item, error)) (it Item, err error, joined bool) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return Item{}, ErrClosed, false
	}
	if f.calls == nil {
		f.calls = make(map[string]*call)
	}
	c, joined := f.calls[key]
	if joined {
		c.waiters++
	} else {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(f.closing, cancel)
		c = &call{done: make(chan struct{}), waiters: 1, cancel: cancel}
		f.calls[key] = c
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer stop()
			defer cancel()
			c.item, c.err = load(lctx)
			f.mu.Lock()
			if f.calls[key] == c {
				delete(f.calls, key)
			}
			f.mu.Unlock()
			close(c.done)
		}()
	}
	f.mu.Unlock()

	select {
	case <-c.done:
		return c.item, c.err, joined
	case <-ctx.Done():
		f.mu.Lock()
		c.waiters--
		if c.waiters == 0 {
			// Nobody wants the result any more: stop the load, and let
			// the next caller start a fresh one.
			c.cancel()
			if f.calls[key] == c {
				delete(f.calls, key)
			}
		}
		f.mu.Unlock()
		return Item{}, ctx.Err(), joined
	}
}

// close refuses new loads and waits for the running ones (whose context
// the caller has cancelled through closing).
func (f *flight) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.wg.Wait()
}

// waiting returns how many callers wait on key's load (for tests).
func (f *flight) waiting(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.calls[key]; c != nil {
		return c.waiters
	}
	return 0
}
