package balancer

import (
	"context"
	"fmt"
	"time"
)

// Drain stops new requests to the backend with the given ID; its requests
// in flight finish. The backend stays listed, in state Draining, whatever
// its health checks say, until Undrain or Remove. Draining a draining
// backend does nothing.
func (p *Pool) Drain(id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.Backend(id)
	if b == nil {
		return fmt.Errorf("draining %s in %s: %w", id, p.name, ErrUnknownBackend)
	}
	p.drainLocked(b, "drained")
	return nil
}

// Undrain lets a drained backend take requests again (its state follows
// its health once more) and calls off its removal, if Remove was called.
func (p *Pool) Undrain(id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.Backend(id)
	if b == nil {
		return fmt.Errorf("undraining %s in %s: %w", id, p.name, ErrUnknownBackend)
	}
	p.undrainLocked(b, "undrained")
	return nil
}

// Remove drains the backend with the given ID and returns at once; the
// backend leaves the pool when it has no request in flight, or after
// Config.DrainTimeout even if it still has some (they go on, untracked by
// the pool). The removal is carried out by a goroutine that Remove starts,
// so it happens whether or not Run is running. Removing a backend that is
// already being removed does nothing.
func (p *Pool) Remove(id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.Backend(id)
	if b == nil {
		return fmt.Errorf("removing %s from %s: %w", id, p.name, ErrUnknownBackend)
	}
	p.removeLocked(b, "removed")
	return nil
}

// WaitDrained waits until the draining backend with the given ID has no
// request in flight, or has left the pool (after Remove). A backend that is
// not in the pool counts as drained and returns nil at once: after Remove
// it may have left already. It returns ErrNotDraining if the backend is not
// draining or its draining is called off, and the context's error, wrapped,
// when ctx is done first.
func (p *Pool) WaitDrained(ctx context.Context, id string) error {
	b := p.Backend(id)
	if b == nil {
		return nil
	}
	b.mu.Lock()
	draining, idle := b.draining, b.idle
	b.mu.Unlock()
	if !draining || idle == nil {
		return fmt.Errorf("waiting for %s in %s: %w", id, p.name, ErrNotDraining)
	}
	select {
	case <-idle:
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s in %s to drain: %w", id, p.name, ctx.Err())
	}
	b.mu.Lock()
	draining = b.draining
	b.mu.Unlock()
	if !draining {
		return fmt.Errorf("waiting for %s in %s: draining called off: %w", id, p.name, ErrNotDraining)
	}
	return nil
}

// drainLocked puts b in state Draining; p.mu must be held.
func (p *Pool) drainLocked(b *Backend, reason string) {
	p.transition(b, func() string {
		b.draining = true
		if b.idle == nil {
			b.idle, b.idleClosed = make(chan struct{}), false
		}
		return reason
	})
	// Only now that the state says Draining: a Pick counting a request
	// after this sees the state and backs off, or is seen here.
	b.mu.Lock()
	b.signalIdleLocked()
	b.mu.Unlock()
}

// undrainLocked calls off b's draining and removal; p.mu must be held.
func (p *Pool) undrainLocked(b *Backend, reason string) {
	if b.removing {
		b.removing = false
		b.removeGen++
	}
	p.transition(b, func() string {
		b.draining = false
		if b.idle != nil && !b.idleClosed {
			close(b.idle) // wakes WaitDrained and the removal goroutine
		}
		b.idle, b.idleClosed = nil, false
		return reason
	})
}

// removeLocked drains b and starts the goroutine that drops it once
// drained or after the drain timeout; p.mu must be held.
func (p *Pool) removeLocked(b *Backend, reason string) {
	if b.removing {
		return
	}
	b.removing = true
	b.removeGen++
	gen := b.removeGen
	p.drainLocked(b, reason)
	b.mu.Lock()
	idle := b.idle
	b.mu.Unlock()
	timeout := p.snap.Load().cfg.DrainTimeout
	go p.awaitRemoval(b, gen, idle, timeout)
}

// awaitRemoval drops b once it is idle or the timeout has passed, unless
// the removal was called off meanwhile.
func (p *Pool) awaitRemoval(b *Backend, gen uint64, idle <-chan struct{}, timeout time.Duration) {
	expired := make(chan struct{})
	stop := p.clock.AfterFunc(timeout, func() { close(expired) })
	reason := "drained"
	select {
	case <-idle:
		stop()
	case <-expired:
		reason = "drain timeout"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !b.removing || b.removeGen != gen {
		return // called off, or replaced
	}
	p.dropLocked(b, reason)
}

// dropLocked takes b out of the pool; p.mu must be held.
func (p *Pool) dropLocked(b *Backend, reason string) {
	s := *p.snap.Load()
	bs := make([]*Backend, 0, len(s.backends))
	for _, x := range s.backends {
		if x != b {
			bs = append(bs, x)
		}
	}
	s.backends = bs
	p.snap.Store(&s)
	p.closeOut(b, reason)
	p.notify()
}

// closeOut finishes a backend that has left the pool: its removal is over,
// its ejection timer stopped and WaitDrained woken; p.mu must be held.
func (p *Pool) closeOut(b *Backend, reason string) {
	b.removing = false
	b.removeGen++
	b.mu.Lock()
	b.draining = true // a backend out of the pool takes no requests
	if b.State() != Draining {
		b.state.Store(int32(Draining))
		b.changes[Draining].Add(1)
	}
	if b.idle == nil {
		b.idle = make(chan struct{})
	}
	if !b.idleClosed {
		close(b.idle)
		b.idleClosed = true
	}
	if b.stopEject != nil {
		b.stopEject()
		b.stopEject = nil
	}
	b.mu.Unlock()
	p.snap.Load().log.Info("backend left the pool", "backend", b.ID, "reason", reason, "in_flight", b.Active())
}
