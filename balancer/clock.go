package balancer

import (
	"math/rand/v2"
	"time"
)

// clock is the pool's source of time. Tests replace it with a fake clock so
// that ejections and drain timeouts happen when the test says so.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d; the returned func
	// stops the timer and reports whether it did so before f ran.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// randUint64N returns a uniform random number in [0, n); n > 0. It is the
// default source of randomness of the pickers that break ties at random.
func randUint64N(n uint64) uint64 { return rand.Uint64N(n) }
