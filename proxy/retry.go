package proxy

import (
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// RetryConfig bounds how failed requests are tried again on other backends.
//
// A request that could not be sent (connection refused, dial timeout, every
// connection to the backend busy) goes to another backend whatever its
// method: the first backend never saw it. A request that was sent and failed
// (connection broke, no response headers in time, or a 502, 503 or 504
// answer) goes to another backend only if its method is idempotent (GET,
// HEAD, OPTIONS, TRACE, PUT, DELETE) and its body is held in memory (no body,
// or a Content-Length up to ReplayBodyBytes); such retries also need budget.
type RetryConfig struct {
	// Max is the number of extra tries after the first. Default 2; negative
	// means no retries.
	Max int
	// BudgetPercent caps retries of requests that reached a backend at this
	// share of the upstream's requests, so that retries cannot multiply the
	// load on a struggling upstream. Default 20. Retries of requests that
	// never reached a backend cost nothing to the backends and are bounded
	// by Max only.
	BudgetPercent int
	// BudgetBurst is the number of retries the budget allows before any
	// traffic has paid for them, and the most it saves up: enough for every
	// request in flight on a backend that dies. Default 100.
	BudgetBurst int
	// ReplayBodyBytes is the largest body of an idempotent request held in
	// memory so that the request can be sent again. Larger bodies are
	// streamed and their requests are retried only when nothing was sent.
	// Default 64 KiB.
	ReplayBodyBytes int
}

func (c RetryConfig) withDefaults() RetryConfig {
	if c.Max == 0 {
		c.Max = 2
	}
	if c.Max < 0 {
		c.Max = 0
	}
	if c.BudgetPercent <= 0 {
		c.BudgetPercent = 20
	}
	if c.BudgetPercent > 100 {
		c.BudgetPercent = 100
	}
	if c.BudgetBurst <= 0 {
		c.BudgetBurst = 100
	}
	if c.ReplayBodyBytes <= 0 {
		c.ReplayBodyBytes = 64 << 10
	}
	return c
}

// budget is a token bucket filled by requests and drained by retries: each
// request adds percent hundredths of a retry, each retry takes a whole one.
type budget struct {
	tokens  atomic.Int64 // hundredths of a retry
	percent int64
	max     int64
}

func newBudget(c RetryConfig) *budget {
	b := &budget{percent: int64(c.BudgetPercent), max: int64(c.BudgetBurst) * 100}
	b.tokens.Store(b.max)
	return b
}

// deposit credits one request.
func (b *budget) deposit() {
	if b.tokens.Load() >= b.max {
		return
	}
	if b.tokens.Add(b.percent) > b.max {
		b.tokens.Store(b.max)
	}
}

// take spends one retry if the budget has one.
func (b *budget) take() bool {
	for {
		t := b.tokens.Load()
		if t < 100 {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-100) {
			return true
		}
	}
}

// idempotent reports whether RFC 9110 (section 9.2.2) makes the method
// idempotent, so that sending it twice has the effect of sending it once.
func idempotent(h *fasthttp.RequestHeader) bool {
	return h.IsGet() || h.IsHead() || h.IsOptions() || h.IsTrace() || h.IsPut() || h.IsDelete()
}
