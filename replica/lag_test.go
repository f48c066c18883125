package replica

import (
	"testing"
	"time"
)

func TestWALHistoryBehind(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var h walHistory
	for i := range 10 {
		h.add(t0.Add(time.Duration(i)*time.Second), uint64(100*(i+1))) // 100 at t0, ..., 1000 at t0+9s
	}
	now := t0.Add(9 * time.Second)
	tests := []struct {
		replayed uint64
		want     time.Duration
	}{
		{1000, 0},              // caught up with the newest sample
		{2000, 0},              // ahead of the samples (sampled later)
		{999, 0},               // the newest sample is the first past it
		{900, 0},               // likewise
		{850, time.Second},     // missing WAL the primary had at t0+8s
		{100, 8 * time.Second}, // missing WAL from t0+1s
		{50, 9 * time.Second},  // older than every sample: a lower bound
	}
	for _, tc := range tests {
		if got := h.behind(tc.replayed, now); got != tc.want {
			t.Errorf("behind(%d) = %v, want %v", tc.replayed, got, tc.want)
		}
	}

	// The ring keeps the newest walHistorySize samples.
	for i := range walHistorySize + 5 {
		h.add(now.Add(time.Duration(i)*time.Millisecond), uint64(2000+i))
	}
	if h.n != walHistorySize {
		t.Fatalf("n = %d, want %d", h.n, walHistorySize)
	}
	last := now.Add(time.Duration(walHistorySize+4) * time.Millisecond)
	if got := h.behind(uint64(2000+walHistorySize+3), last); got != 0 {
		t.Fatalf("one sample behind the newest: %v, want 0", got)
	}
	if got := h.behind(0, last); got != time.Duration(walHistorySize-1)*time.Millisecond {
		t.Fatalf("behind everything: %v", got)
	}
	h.reset()
	if got := h.behind(0, last); got != 0 {
		t.Fatalf("after reset: %v, want 0", got)
	}
}

func TestRecordEnd(t *testing.T) {
	for _, tc := range []struct{ in, want uint64 }{
		{0x4000028, 0x4000000}, // segment start, long header
		{0x4002018, 0x4002000}, // page start, short header
		{0x4002030, 0x4002030}, // a record end
		{0x4001FF8, 0x4001FF8},
	} {
		if got := recordEnd(tc.in); got != tc.want {
			t.Errorf("recordEnd(%#x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}
