package replica

import "time"

// walHistorySize bounds the samples kept: at the default 1s interval,
// 17 minutes of history; at 50ms, 51s.
const walHistorySize = 1024

// walHistory remembers when the primary reached which WAL position, one
// sample per check, to tell how long ago the primary was where a replica
// is now. Only the checker goroutine uses it.
type walHistory struct {
	t     [walHistorySize]time.Time
	lsn   [walHistorySize]uint64
	start int // index of the oldest sample
	n     int
}

func (h *walHistory) reset() { h.start, h.n = 0, 0 }

func (h *walHistory) add(t time.Time, lsn uint64) {
	i := (h.start + h.n) % walHistorySize
	if h.n == walHistorySize {
		h.start = (h.start + 1) % walHistorySize
	} else {
		h.n++
	}
	h.t[i], h.lsn[i] = t, lsn
}

// behind returns how long a replica that has replayed up to lsn has been
// missing WAL the primary had: now minus the time of the first sample past
// lsn, 0 if no sample is past it. If even the oldest sample is past lsn,
// the result is measured from that sample and so is a lower bound.
func (h *walHistory) behind(lsn uint64, now time.Time) time.Duration {
	// Samples are in LSN order; scan from the newest, they are few.
	first := -1
	for k := h.n - 1; k >= 0; k-- {
		i := (h.start + k) % walHistorySize
		if h.lsn[i] <= lsn {
			break
		}
		first = i
	}
	if first < 0 {
		return 0
	}
	return now.Sub(h.t[first])
}

// walPageSize is PostgreSQL's WAL page size (XLOG_BLCKSZ, 8 KiB unless
// built otherwise).
const walPageSize = 8192

// recordEnd maps the primary's WAL insert position to the end of the last
// record it covers: when the last record ended at a page boundary, the
// insert position already points past the next page's header (24 bytes,
// or 40 at a segment start), where no replica's replay position will be
// until more WAL is written. It is safe for tokens: the only record that
// can end between a page start and offset 40 is one spanning into the page
// (no record is shorter than 24 bytes), so a replica that has replayed
// past the page start has replayed that record too.
func recordEnd(lsn uint64) uint64 {
	if off := lsn % walPageSize; off == 24 || off == 40 {
		return lsn - off
	}
	return lsn
}
