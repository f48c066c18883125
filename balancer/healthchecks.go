package balancer

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Active health: with HealthConfig.Path set, Run checks every backend of the
// pool every Interval, the first time as soon as Run starts or the backend
// joins. A backend goes Unhealthy after UnhealthyAfter failed checks in a
// row (an error, a timeout or a status outside StatusMin–StatusMax) and
// back to Healthy after HealthyAfter passed checks in a row. Backends start
// Healthy: they take traffic at once and the checks take them out if they
// fail (passive checks and the proxy's retries cover the first seconds).
// A draining backend stays Draining whatever the checks say; they go on, so
// its health is known if it is undrained.

// newHealthClient returns the client of the health checks: its own small
// keep-alive pool, no proxy from the environment, redirects not followed
// (a 3xx is judged by the status range).
func newHealthClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 1,
			MaxConnsPerHost:     2,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Run runs the active health checks of every backend until ctx is done,
// following backends added or removed later and configuration changes made
// by Update. Without a health path it only waits. Call it once per pool;
// a second concurrent call waits for ctx without checking anything. Ejection
// ends and removals do not depend on Run.
func (p *Pool) Run(ctx context.Context) {
	if !p.running.CompareAndSwap(false, true) {
		p.snap.Load().log.Warn("balancer: Run called while already running")
		<-ctx.Done()
		return
	}
	defer p.running.Store(false)
	type checker struct {
		cancel context.CancelFunc
		cfg    HealthConfig
	}
	running := make(map[*Backend]checker)
	var wg sync.WaitGroup
	defer func() {
		for _, c := range running {
			c.cancel()
		}
		wg.Wait()
		p.client.CloseIdleConnections()
	}()
	for {
		s := p.snap.Load()
		hc := s.cfg.Health
		want := make(map[*Backend]bool, len(s.backends))
		if hc.enabled() {
			for _, b := range s.backends {
				want[b] = true
			}
		}
		for b, c := range running {
			if !want[b] || c.cfg != hc {
				c.cancel()
				delete(running, b)
			}
		}
		for b := range want {
			if _, ok := running[b]; ok {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			running[b] = checker{cancel: cancel, cfg: hc}
			wg.Go(func() { p.checkLoop(cctx, b, hc) })
		}
		select {
		case <-ctx.Done():
			return
		case <-p.changed:
		}
	}
}

// checkLoop checks b at once and then every interval until ctx is done.
func (p *Pool) checkLoop(ctx context.Context, b *Backend, hc HealthConfig) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.probe(ctx, b, hc)
		if ctx.Err() != nil {
			return // stopped mid-check: the result means nothing
		}
		p.recordCheck(b, hc, err)
		t.Reset(hc.Interval)
	}
}

// probe runs one health check of b.
func (p *Pool) probe(ctx context.Context, b *Backend, hc HealthConfig) error {
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, hc.Method, b.URL.Scheme+"://"+b.URL.Host+hc.Path, nil)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	req.Header.Set("User-Agent", "scaleout-health-check")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	// Read a little of the body so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < hc.StatusMin || resp.StatusCode > hc.StatusMax {
		return fmt.Errorf("health check: status %d, want %d-%d", resp.StatusCode, hc.StatusMin, hc.StatusMax)
	}
	return nil
}

// recordCheck applies a check's result to b's state.
func (p *Pool) recordCheck(b *Backend, hc HealthConfig, err error) {
	p.transition(b, func() string {
		if err == nil {
			b.lastCheckErr = ""
			b.checkFail = 0
			b.checkOK++
			if b.activeDown && b.checkOK >= hc.HealthyAfter {
				b.activeDown = false
			}
			return fmt.Sprintf("active: %d checks passed in a row", b.checkOK)
		}
		b.lastCheckErr = err.Error()
		b.checkOK = 0
		b.checkFail++
		if !b.activeDown && b.checkFail >= hc.UnhealthyAfter {
			b.activeDown = true
		}
		return fmt.Sprintf("active: %d checks failed in a row: %v", b.checkFail, err)
	})
}
