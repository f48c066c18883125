package autoscale

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scaleout/scaleout/balancer"
)

// testPool returns a pool with passive checks off, so that a failed
// request shows up as a failure of the test rather than being hidden.
func testPool(t *testing.T) *balancer.Pool {
	t.Helper()
	pool, err := balancer.New("app", balancer.Config{Passive: balancer.PassiveConfig{Disabled: true}, Logger: quietLogger()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// appConfig runs the test binary as the app.
func appConfig(mode string, env ...string) ProcessConfig {
	return ProcessConfig{
		Command: []string{os.Args[0]},
		// A race-enabled child sleeps 1 s at exit by default.
		Env:          append([]string{"AUTOSCALE_TEST_APP=" + mode, "GORACE=atexit_sleep_ms=0"}, env...),
		StartTimeout: 20 * time.Second,
		StopGrace:    2 * time.Second,
		DrainTimeout: 10 * time.Second,
		Logger:       quietLogger(),
		Stderr:       os.Stderr,
	}
}

// pidWatch remembers every PID a provider ran.
type pidWatch struct {
	mu   sync.Mutex
	pids map[int]bool
}

func (w *pidWatch) see(insts []Instance) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pids == nil {
		w.pids = map[int]bool{}
	}
	for _, in := range insts {
		if in.PID > 0 {
			w.pids[in.PID] = true
		}
	}
}

// procAlive reports whether pid runs (a zombie does not count: it is dead
// and only waits for its parent, here init, to reap it).
func procAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i < 0 || !strings.HasPrefix(string(data[i+1:]), " Z")
}

// groupMembers lists the live processes of process group pgid.
func groupMembers(pgid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st, err := parseStat(data)
		if err == nil && st.pgrp == pgid && procAlive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// assertNoneLeft fails if any of the PIDs, or any member of their process
// groups, still runs.
func assertNoneLeft(t *testing.T, pids map[int]bool) {
	t.Helper()
	if len(pids) == 0 {
		t.Fatal("no process was seen")
	}
	deadline := time.Now().Add(5 * time.Second)
	for pid := range pids {
		for procAlive(pid) || len(groupMembers(pid)) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("process %d (or its group %v) still runs", pid, groupMembers(pid))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// loadGen sends an open-loop load through the pool to the instances: rate
// requests per second, each picked, sent over HTTP and reported to Done,
// as the gateway's proxy does.
type loadGen struct {
	pool   *balancer.Pool
	client *http.Client
	rate   atomic.Int64
	sent   atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	errs   []string
	wg     sync.WaitGroup
	// record, if set, is told of every request when it ends.
	record func(start, end time.Time, ok bool)
}

// maxOutstanding bounds the requests in flight of a load generator.
const maxOutstanding = 5000

func (g *loadGen) run(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	sem := make(chan struct{}, maxOutstanding)
	var debt float64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			g.wg.Wait()
			return
		case <-tick.C:
		}
		// From the time elapsed, not the ticks: a ticker drops ticks when
		// the machine is busy, and the load must not drop with them.
		now := time.Now()
		debt += float64(g.rate.Load()) * now.Sub(last).Seconds()
		last = now
		for ; debt >= 1; debt-- {
			select {
			case sem <- struct{}{}:
			default:
				g.fail("load generator saturated")
				continue
			}
			g.wg.Add(1)
			go func() {
				defer func() { <-sem; g.wg.Done() }()
				g.one()
			}()
		}
	}
}

func (g *loadGen) fail(msg string) {
	g.failed.Add(1)
	g.mu.Lock()
	if len(g.errs) < 10 {
		g.errs = append(g.errs, msg)
	}
	g.mu.Unlock()
}

func (g *loadGen) one() {
	g.sent.Add(1)
	start := time.Now()
	ok := false
	if g.record != nil {
		defer func() { g.record(start, time.Now(), ok) }()
	}
	b, err := g.pool.Pick(netip.Addr{}, nil)
	if err != nil {
		g.fail(err.Error())
		return
	}
	resp, err := g.client.Get(b.URL.String() + "/")
	if err != nil {
		g.pool.Done(b, time.Since(start), balancer.ConnectFailure)
		g.fail(err.Error())
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		g.pool.Done(b, time.Since(start), balancer.ServerError)
		g.fail(fmt.Sprintf("%s: status %d", b.ID, resp.StatusCode))
		return
	}
	g.pool.Done(b, time.Since(start), balancer.Success)
	ok = true
}

func TestProcessFollowsLoadWithoutFailingARequest(t *testing.T) {
	pool := testPool(t)
	prov, err := NewProcess("app", pool, appConfig("serve", "APP_LATENCY=100ms"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New("app", pool, prov, Config{
		Min: 2, Max: 5, Metric: MetricInflight, Target: 2,
		Interval: 200 * time.Millisecond, ScaleDownWindow: 2 * time.Second,
		ScaleUp: ScaleUpPolicy{Period: time.Second}, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()

	var pids pidWatch
	ready := func() int {
		insts := prov.Instances()
		pids.see(insts)
		n := 0
		for _, in := range insts {
			if in.State == Ready {
				n++
			}
		}
		return n
	}
	waitFor := func(what string, d time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v; status %+v", what, d, c.Status())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("2 instances ready", 20*time.Second, func() bool { return ready() == 2 })

	gen := &loadGen{pool: pool, client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 100},
	}}
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() { gen.run(loadCtx); close(loadDone) }()

	// Low load: 10 rps × 100 ms = 1 in flight, 0.5 per instance.
	gen.rate.Store(10)
	time.Sleep(time.Second)
	if n := ready(); n != 2 {
		t.Fatalf("low load: %d instances, want 2", n)
	}
	// High load: 100 rps × 100 ms = 10 in flight, 2 per instance on 5.
	gen.rate.Store(100)
	peak := 0
	waitFor("scale-out towards 5", 30*time.Second, func() bool { peak = max(peak, ready()); return peak >= 4 })
	time.Sleep(2 * time.Second)
	peak = max(peak, ready())
	// Low load again: back to 2, draining the instances that go while
	// requests still flow.
	gen.rate.Store(10)
	waitFor("scale-in to 2", 30*time.Second, func() bool { return ready() == 2 && len(prov.Instances()) == 2 })
	stopLoad()
	<-loadDone

	if gen.failed.Load() != 0 {
		t.Fatalf("%d of %d client requests failed: %v", gen.failed.Load(), gen.sent.Load(), gen.errs)
	}
	st := c.Status()
	if st.ScaleUps == 0 || st.ScaleDowns == 0 || st.ProviderFailures != 0 {
		t.Fatalf("status %+v: want scale-ups, scale-downs and no failure", st)
	}
	t.Logf("%d requests, none failed; peak %d instances; %d scale-ups, %d scale-downs", gen.sent.Load(), peak, st.ScaleUps, st.ScaleDowns)

	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	if n := len(prov.Instances()); n != 0 {
		t.Fatalf("%d instances after Run returned", n)
	}
	assertNoneLeft(t, pids.pids)
}

func TestProcessScaleInDrainsRequestsInFlight(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	p, err := NewProcess("app", pool, appConfig("serve", "APP_LATENCY=700ms"))
	if err != nil {
		t.Fatal(err)
	}
	p.Scale(2)
	events, stop := runProvider(t, p)
	waitUntil(t, "2 ready", 20*time.Second, func() bool { return len(readyInstances(p)) == 2 })
	victim := readyInstances(p)[1] // the newest goes first

	// Six slow requests, three on each instance (round-robin).
	gen := &loadGen{pool: pool, client: &http.Client{Timeout: 10 * time.Second}}
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(gen.one)
	}
	waitUntil(t, "requests in flight on the victim", 5*time.Second, func() bool {
		b := pool.Backend(victim.Backend)
		return b != nil && b.Active() == 3
	})
	p.Scale(1)
	waitUntil(t, "the victim draining", 5*time.Second, func() bool {
		b := pool.Backend(victim.Backend)
		return b == nil || b.State() == balancer.Draining
	})
	if !procAlive(victim.PID) {
		t.Fatal("the victim was stopped with requests in flight")
	}
	wg.Wait()
	if gen.failed.Load() != 0 {
		t.Fatalf("%d of 6 requests failed during the scale-in: %v", gen.failed.Load(), gen.errs)
	}
	waitUntil(t, "the victim gone", 10*time.Second, func() bool { return len(p.Instances()) == 1 })
	assertNoneLeft(t, map[int]bool{victim.PID: true})
	if pool.Backend(victim.Backend) != nil || len(pool.Backends()) != 1 {
		t.Fatalf("pool backends %v after the scale-in", pool.Backends())
	}
	stop()
	if evs := events(); len(evs) != 0 {
		t.Fatalf("events %+v: want none", evs)
	}
}

// runProvider runs p until the test ends and returns its events.
func runProvider(t *testing.T, p *Process) (events func() []Event, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var evs []Event
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Run(ctx, func(e Event) {
			mu.Lock()
			evs = append(evs, e)
			mu.Unlock()
		})
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return func() []Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]Event(nil), evs...)
	}, stop
}

func waitUntil(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readyInstances(p *Process) []Instance {
	var out []Instance
	for _, in := range p.Instances() {
		if in.State == Ready {
			out = append(out, in)
		}
	}
	return out
}

func TestProcessReplacesACrashedInstance(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	cfg := appConfig("serve")
	cfg.BackoffMin = 100 * time.Millisecond
	p, err := NewProcess("app", pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Scale(2)
	events, stop := runProvider(t, p)
	waitUntil(t, "2 ready", 20*time.Second, func() bool { return len(readyInstances(p)) == 2 })
	victim := readyInstances(p)[0]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a replacement", 20*time.Second, func() bool {
		r := readyInstances(p)
		return len(r) == 2 && r[0].ID != victim.ID && r[1].ID != victim.ID
	})
	var crashed []Event
	for _, e := range events() {
		if e.Type == EventCrashed {
			crashed = append(crashed, e)
		}
	}
	if len(crashed) != 1 || crashed[0].Instance != victim.ID || !strings.Contains(crashed[0].Error, "killed") {
		t.Fatalf("crash events %+v: want one for %s", crashed, victim.ID)
	}
	if pool.Backend(victim.Backend) != nil {
		t.Fatalf("crashed backend %s still in the pool", victim.Backend)
	}
	if got := len(pool.Backends()); got != 2 {
		t.Fatalf("%d backends in the pool, want 2", got)
	}
	var pids pidWatch
	pids.see(p.Instances())
	stop()
	assertNoneLeft(t, pids.pids)
}

func TestProcessBacksOffAFailingCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     ProcessConfig
		wantErr string
	}{
		{"crashes at start", appConfig("crash"), "exited before passing its health check: exit status 3"},
		{"never healthy", func() ProcessConfig {
			c := appConfig("unhealthy")
			c.StartTimeout = 300 * time.Millisecond
			return c
		}(), "no passing health check on /health within 300ms"},
		{"no such command", ProcessConfig{Command: []string{"/nonexistent/app"}, Logger: quietLogger()}, `starting "/nonexistent/app"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			cfg.BackoffMin, cfg.BackoffMax = 100*time.Millisecond, 400*time.Millisecond
			cfg.StopGrace = 2 * time.Second
			cfg.Stderr = nil
			pool := testPool(t)
			p, err := NewProcess("app", pool, cfg)
			if err != nil {
				t.Fatal(err)
			}
			p.Scale(2)
			var mu sync.Mutex
			var evs []Event
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = p.Run(ctx, func(e Event) {
					e.Time = time.Now()
					mu.Lock()
					evs = append(evs, e)
					mu.Unlock()
				})
			}()
			var pids pidWatch
			waitUntil(t, "5 failures", 30*time.Second, func() bool {
				pids.see(p.Instances())
				mu.Lock()
				defer mu.Unlock()
				return len(evs) >= 5
			})
			cancel()
			<-done
			mu.Lock()
			defer mu.Unlock()
			// The first 2 start together; after the first failure, one
			// probe at a time, each after the backoff of the failure before
			// it: 100 ms, doubling, capped at 400 ms. Never a tight loop,
			// however fast the command fails.
			wantRetry := []string{"100ms", "200ms", "400ms", "400ms"}
			for i, e := range evs {
				if e.Type != EventStartFailed || !strings.Contains(e.Error, tt.wantErr) {
					t.Fatalf("event %d: %+v: want start_failed with %q", i, e, tt.wantErr)
				}
				if i < len(wantRetry) && e.RetryIn != wantRetry[i] {
					t.Fatalf("event %d: retry in %s, want %s", i, e.RetryIn, wantRetry[i])
				}
				if i >= 2 {
					wait, _ := time.ParseDuration(evs[i-1].RetryIn)
					if gap := e.Time.Sub(evs[i-1].Time); gap < wait {
						t.Fatalf("failure %d came %v after the previous one, before its %v backoff", i, gap, wait)
					}
				}
			}
			b := p.Backoff()
			if b.ConsecutiveFailures != len(evs) || !strings.Contains(b.LastError, tt.wantErr) {
				t.Fatalf("backoff %+v after %d failures", b, len(evs))
			}
			if len(pool.Backends()) != 0 {
				t.Fatalf("a failed instance joined the pool: %v", pool.Backends())
			}
			if len(pids.pids) > 0 {
				assertNoneLeft(t, pids.pids)
			}
		})
	}
}

func TestProcessStopKillsTheGroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  ProcessConfig
	}{
		{"app with a child", appConfig("serve", "APP_CHILD=1")},
		{"app that ignores SIGTERM", func() ProcessConfig {
			c := appConfig("ignore-term")
			c.StopGrace = 300 * time.Millisecond
			return c
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewProcess("app", testPool(t), tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			p.Scale(1)
			events, stop := runProvider(t, p)
			waitUntil(t, "ready", 20*time.Second, func() bool { return len(readyInstances(p)) == 1 })
			in := readyInstances(p)[0]
			if strings.Contains(tt.name, "child") {
				waitUntil(t, "the app's child", 5*time.Second, func() bool { return len(groupMembers(in.PID)) == 2 })
			}
			p.Scale(0)
			waitUntil(t, "stopped", 10*time.Second, func() bool { return len(p.Instances()) == 0 })
			assertNoneLeft(t, map[int]bool{in.PID: true})
			stop()
			evs := events()
			if strings.Contains(tt.name, "SIGTERM") {
				if len(evs) != 1 || evs[0].Type != EventStopFailed || !strings.Contains(evs[0].Reason, "killed") {
					t.Fatalf("events %+v: want one stop_failed", evs)
				}
			} else if len(evs) != 0 {
				t.Fatalf("events %+v: want none", evs)
			}
		})
	}
}

func TestNoOrphanWhenTheGatewayIsKilled(t *testing.T) {
	t.Parallel()
	gw := exec.Command(os.Args[0])
	gw.Env = append(os.Environ(), "AUTOSCALE_TEST_APP=gateway")
	gw.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	gw.Stderr = os.Stderr
	out, err := gw.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = gw.Process.Kill(); _ = gw.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the gateway's PIDs: %v", err)
	}
	pids := map[int]bool{}
	for _, f := range strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "PIDS ")) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if !procAlive(pid) {
			t.Fatalf("instance %d is not running before the kill", pid)
		}
		pids[pid] = true
	}
	if len(pids) != 2 {
		t.Fatalf("line %q: want 2 PIDs", line)
	}
	if err := gw.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = gw.Wait()
	assertNoneLeft(t, pids)
}

func TestProcessCPUTimes(t *testing.T) {
	t.Parallel()
	var p *Process
	var err error
	pool := testPool(t)
	p, err = NewProcess("app", pool, appConfig("serve", "APP_BURN=1"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New("app", pool, p, Config{Min: 1, Max: 1, Metric: MetricCPU, Target: 50, Interval: 200 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitUntil(t, "ready", 20*time.Second, func() bool { return len(readyInstances(p)) == 1 })
	in := readyInstances(p)[0]
	first := p.CPUTimes()[in.Backend]
	waitUntil(t, "CPU time to grow while the app burns a core", 10*time.Second, func() bool {
		return p.CPUTimes()[in.Backend] >= first+200*time.Millisecond
	})
	// The controller sees the burning instance as busy: well above 0 %
	// of a core (how far depends on the machine's other load).
	waitUntil(t, "the cpu metric", 10*time.Second, func() bool {
		d := c.Status().LastDecision
		return d != nil && !d.MetricMissing && d.Observed > 10
	})
}

func TestProcessConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  ProcessConfig
		want string
	}{
		{"no command", ProcessConfig{}, "command is required"},
		{"bad health path", ProcessConfig{Command: []string{"x"}, HealthPath: "health"}, `health path "health"`},
		{"negative duration", ProcessConfig{Command: []string{"x"}, StopGrace: -time.Second}, "duration -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewProcess("app", testPool(t), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := NewProcess("app", nil, ProcessConfig{Command: []string{"x"}}); err == nil {
		t.Fatal("nil pool accepted")
	}
}
