package balancer

import (
	"fmt"
	"time"
)

// Passive health: Done counts a backend's failures in a row (connect
// failures, timeouts, 5xx); after PassiveConfig.Failures of them the
// backend is ejected, state Unhealthy, for EjectFor × the number of
// ejections in a row, at most MaxEjectFor. An ejection that starts more
// than MaxEjectFor after the previous one ended starts the count over.
// The ejection always runs its full time, even when active health checks
// pass meanwhile (a backend can answer its health path and still fail real
// requests); when it ends, the backend is Healthy again unless active checks
// hold it down. At most MaxEjectedPercent of the pool's backends (rounded
// down, but at least one of two or more; never a lone backend) are ejected
// at once; a backend over that cap stays in and is ejected at its next
// failure if room has been made. Draining backends are not ejected.

// failed counts a failed request on b and ejects b when it has failed too
// often in a row.
func (p *Pool) failed(b *Backend) {
	n := b.consecFails.Add(1)
	pc := p.snap.Load().cfg.Passive
	if pc.Disabled || n < int64(pc.Failures) {
		return
	}
	p.eject(b)
}

// eject ejects b, unless it is ejected already, it left the pool or the
// pool has as many ejected backends as it may.
func (p *Pool) eject(b *Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.snap.Load()
	pc := s.cfg.Passive
	ejected, member := 0, false
	for _, x := range s.backends {
		if x == b {
			member = true
		}
		x.mu.Lock()
		if x.ejected {
			if x == b {
				x.mu.Unlock()
				return
			}
			ejected++
		}
		x.mu.Unlock()
	}
	if !member || len(s.backends) < 2 || b.State() == Draining {
		return
	}
	if limit := max(1, pc.MaxEjectedPercent*len(s.backends)/100); ejected >= limit {
		s.log.Debug("backend not ejected: too many ejected", "backend", b.ID, "ejected", ejected, "limit", limit)
		return
	}
	now := p.clock.Now()
	fails := b.consecFails.Load()
	var d time.Duration
	p.transition(b, func() string {
		if !b.ejectEnd.IsZero() && now.Sub(b.ejectEnd) > pc.MaxEjectFor {
			b.ejectStreak = 0
		}
		if time.Duration(b.ejectStreak)*pc.EjectFor < pc.MaxEjectFor {
			b.ejectStreak++
		}
		d = min(time.Duration(b.ejectStreak)*pc.EjectFor, pc.MaxEjectFor)
		b.ejected = true
		b.stopEject = p.clock.AfterFunc(d, func() { p.unEject(b) })
		return fmt.Sprintf("passive: %d failures in a row, ejected for %v", fails, d)
	})
	b.ejections.Add(1)
}

// unEject ends b's ejection.
func (p *Pool) unEject(b *Backend) {
	now := p.clock.Now()
	p.transition(b, func() string {
		b.ejected = false
		b.ejectEnd = now
		b.stopEject = nil
		b.consecFails.Store(0)
		return "passive: ejection ended"
	})
}
