package autoscale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/scaleout/scaleout/balancer"
)

// ProcessConfig configures a Process provider. Only Command is required.
type ProcessConfig struct {
	// Command is the program and its arguments, e.g. ["/usr/local/bin/
	// scaleout", "backend"]. Give the program itself rather than a
	// launcher such as "go run": a launcher's own children are killed with
	// the process group on stop, but not if the gateway is killed.
	Command []string
	// Env is added to the gateway's environment, before PORT and
	// INSTANCE_ID.
	Env []string
	// Dir is the working directory. Default the gateway's.
	Dir string
	// Host is the loopback address instances listen on and are reached
	// at. Default 127.0.0.1.
	Host string
	// HealthPath is requested (GET) on a new instance until it answers
	// 2xx or 3xx; only then does the instance join the pool. Default
	// /health.
	HealthPath string
	// StartTimeout bounds the wait for the first passing health check.
	// Default 30 s.
	StartTimeout time.Duration
	// DrainTimeout bounds the wait for an instance's requests in flight on
	// scale-in, before it is terminated anyway. Default 30 s.
	DrainTimeout time.Duration
	// StopGrace is the time between SIGTERM and SIGKILL. Default 10 s.
	StopGrace time.Duration
	// BackoffMin is the wait before the next start after a failure (a
	// start that fails or an instance that exits on its own); it doubles
	// with each failure in a row, up to BackoffMax. After a failure,
	// instances start one at a time until one gets ready. Defaults 1 s and
	// 1 min.
	BackoffMin, BackoffMax time.Duration
	// StableAfter is how long an instance must stay ready for the failures
	// in a row to be forgotten. Default 30 s.
	StableAfter time.Duration
	// Weight is the balancer weight of each instance. Default 1.
	Weight int
	// Stdout and Stderr receive the instances' output. Default: discarded.
	Stdout, Stderr io.Writer
	// Logger receives the provider's logs. Default slog.Default().
	Logger *slog.Logger
}

func (c ProcessConfig) withDefaults() (ProcessConfig, error) {
	if len(c.Command) == 0 || c.Command[0] == "" {
		return c, errors.New("process provider: command is required")
	}
	for _, d := range []time.Duration{c.StartTimeout, c.DrainTimeout, c.StopGrace, c.BackoffMin, c.BackoffMax, c.StableAfter} {
		if d < 0 {
			return c, fmt.Errorf("process provider: duration %v: must not be negative", d)
		}
	}
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.HealthPath == "" {
		c.HealthPath = "/health"
	}
	if c.HealthPath[0] != '/' {
		return c, fmt.Errorf("process provider: health path %q: must start with /", c.HealthPath)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.StartTimeout, 30*time.Second)
	def(&c.DrainTimeout, 30*time.Second)
	def(&c.StopGrace, 10*time.Second)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, time.Minute)
	def(&c.StableAfter, 30*time.Second)
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	c.Weight = max(c.Weight, 1)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Process is the provider that runs instances as child processes of the
// gateway.
type Process struct {
	upstream string
	cfg      ProcessConfig
	pool     Pool
	log      *slog.Logger
	client   *http.Client
	spawner  *spawner
	wake     chan struct{}

	mu          sync.Mutex
	target      int
	procs       map[string]*proc // by instance ID
	seq         int
	failures    int  // in a row
	probing     bool // a failure since the last instance got ready
	nextAttempt time.Time
	lastErr     string
	done        bool // shutting down: start nothing more
	running     bool
	report      func(Event)
	wg          sync.WaitGroup // start, watch and stop goroutines
}

var (
	_ Provider        = (*Process)(nil)
	_ CPUSource       = (*Process)(nil)
	_ BackoffReporter = (*Process)(nil)
)

// proc is one child process.
type proc struct {
	id      string
	url     string
	backend string // backend ID: host:port
	started time.Time

	// Guarded by Process.mu.
	state   InstanceState
	inPool  bool
	readyAt time.Time
	pid     int

	spawned chan struct{} // closed once the start was attempted
	exited  chan struct{} // closed once the process was reaped
	exitErr error         // set before exited is closed
}

// NewProcess returns a provider of instances of the named upstream that
// joins them to pool. It fails on an invalid cfg.
func NewProcess(upstream string, pool Pool, cfg ProcessConfig) (*Process, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", upstream, err)
	}
	if pool == nil {
		return nil, fmt.Errorf("upstream %s: process provider: a pool is required", upstream)
	}
	return &Process{
		upstream: upstream,
		cfg:      cfg,
		pool:     pool,
		log:      cfg.Logger.With("upstream", upstream, "provider", "process"),
		client: &http.Client{
			Timeout:   time.Second,
			Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		},
		wake:  make(chan struct{}, 1),
		procs: map[string]*proc{},
	}, nil
}

// Scale sets the number of instances to run.
func (p *Process) Scale(n int) {
	p.mu.Lock()
	p.target = max(n, 0)
	p.mu.Unlock()
	p.poke()
}

func (p *Process) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Instances lists the instances that are starting, ready or stopping.
func (p *Process) Instances() []Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Instance, 0, len(p.procs))
	for _, pr := range p.procs {
		out = append(out, Instance{ID: pr.id, Backend: pr.backend, URL: pr.url, PID: pr.pid, State: pr.state, Started: pr.started})
	}
	sortInstances(out)
	return out
}

// Backoff reports the failures in a row and when the next start may be.
func (p *Process) Backoff() Backoff {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Backoff{ConsecutiveFailures: p.failures, NextAttempt: p.nextAttempt, LastError: p.lastErr}
}

// Run starts and stops instances to follow Scale until ctx is done; then it
// stops them all (drain, SIGTERM, SIGKILL after StopGrace) and returns nil
// once every child is reaped.
func (p *Process) Run(ctx context.Context, report func(Event)) error {
	if report == nil {
		report = func(Event) {}
	}
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return errors.New("process provider already running")
	}
	p.running, p.done, p.report = true, false, report
	p.spawner = newSpawner()
	p.mu.Unlock()
	defer func() {
		p.wg.Wait()
		p.spawner.close() // no child is left: the locked thread may go
		p.mu.Lock()
		p.running = false
		p.mu.Unlock()
	}()

	t := time.NewTicker(250 * time.Millisecond) // backoff expiry, stability
	defer t.Stop()
	for {
		p.reconcile(ctx)
		select {
		case <-ctx.Done():
			p.shutdown()
			return nil
		case <-p.wake:
		case <-t.C:
		}
	}
}

// reconcile starts or stops instances towards the target.
func (p *Process) reconcile(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	now := time.Now()
	var starting, live []*proc
	for _, pr := range p.procs {
		switch pr.state {
		case Starting:
			starting = append(starting, pr)
			live = append(live, pr)
		case Ready:
			live = append(live, pr)
			if p.failures > 0 && now.Sub(pr.readyAt) >= p.cfg.StableAfter && pr.readyAt.After(p.nextAttempt) {
				p.failures, p.nextAttempt, p.lastErr = 0, time.Time{}, ""
			}
		}
	}
	switch {
	case len(live) < p.target:
		if now.Before(p.nextAttempt) {
			return
		}
		n := p.target - len(live)
		if p.probing {
			n = min(n, 1-len(starting)) // after a failure, one probe at a time
		}
		for range n {
			p.seq++
			pr := &proc{id: fmt.Sprintf("%s-%d", p.upstream, p.seq), state: Starting, started: now,
				spawned: make(chan struct{}), exited: make(chan struct{})}
			p.procs[pr.id] = pr
			p.wg.Add(1)
			go p.start(ctx, pr)
		}
	case len(live) > p.target:
		// Starting ones first (they serve nothing yet), then the newest.
		sortProcs(live)
		for _, pr := range live[:len(live)-p.target] {
			pr.state = Stopping
			p.wg.Add(1)
			go p.stop(pr, "scale-in")
		}
	}
}

// shutdown stops every instance and waits for them.
func (p *Process) shutdown() {
	p.mu.Lock()
	p.done = true
	for _, pr := range p.procs {
		if pr.state != Stopping {
			pr.state = Stopping
			p.wg.Add(1)
			go p.stop(pr, "shutdown")
		}
	}
	p.mu.Unlock()
}

// start starts pr, waits for its health check and adds it to the pool.
func (p *Process) start(ctx context.Context, pr *proc) {
	defer p.wg.Done()
	port, err := freePort(p.cfg.Host)
	var cmd *exec.Cmd
	if err == nil {
		hostPort := net.JoinHostPort(p.cfg.Host, strconv.Itoa(port))
		p.mu.Lock()
		pr.url, pr.backend = "http://"+hostPort, hostPort
		p.mu.Unlock()
		cmd = exec.Command(p.cfg.Command[0], p.cfg.Command[1:]...)
		cmd.Env = append(append(os.Environ(), p.cfg.Env...), "PORT="+strconv.Itoa(port), "INSTANCE_ID="+pr.id)
		cmd.Dir = p.cfg.Dir
		cmd.Stdout, cmd.Stderr = p.cfg.Stdout, p.cfg.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		err = p.spawner.do(cmd.Start)
	}
	p.mu.Lock()
	if err == nil {
		pr.pid = cmd.Process.Pid
	}
	p.mu.Unlock()
	close(pr.spawned)
	if err != nil {
		close(pr.exited)
		p.failStart(pr, fmt.Errorf("starting %q: %w", p.cfg.Command[0], err))
		return
	}
	p.log.Debug("instance started", "instance", pr.id, "pid", pr.pid, "url", pr.url)
	p.wg.Add(1)
	go p.watch(pr, cmd)

	deadline := time.NewTimer(p.cfg.StartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if p.stateOf(pr) != Starting {
			return // scaled in or shut down while starting
		}
		if p.healthy(ctx, pr.url+p.cfg.HealthPath) {
			break
		}
		select {
		case <-ctx.Done():
			return // shutdown stops it
		case <-pr.exited:
			p.failStart(pr, fmt.Errorf("exited before passing its health check: %v", exitReason(pr.exitErr)))
			return
		case <-deadline.C:
			p.failStart(pr, fmt.Errorf("no passing health check on %s within %v", p.cfg.HealthPath, p.cfg.StartTimeout))
			return
		case <-tick.C:
		}
	}
	b, err := balancer.NewBackend(pr.url, p.cfg.Weight)
	if err != nil {
		p.failStart(pr, err)
		return
	}
	p.mu.Lock()
	if pr.state != Starting {
		p.mu.Unlock()
		return
	}
	if err := p.pool.Add(b); err != nil {
		p.mu.Unlock()
		p.failStart(pr, fmt.Errorf("adding to the pool: %w", err))
		return
	}
	pr.state, pr.inPool, pr.readyAt = Ready, true, time.Now()
	p.probing = false
	p.mu.Unlock()
	p.log.Info("instance ready", "instance", pr.id, "pid", pr.pid, "url", pr.url, "after", time.Since(pr.started).Round(time.Millisecond).String())
	p.poke()
}

func (p *Process) stateOf(pr *proc) InstanceState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pr.state
}

func (p *Process) healthy(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

// failStart counts a failure, backs off, reports it and gets rid of pr.
func (p *Process) failStart(pr *proc, err error) {
	p.mu.Lock()
	if pr.state != Starting { // scaled in meanwhile: not a failure
		p.mu.Unlock()
		return
	}
	pr.state = Stopping
	retry := p.failLocked(err)
	p.mu.Unlock()
	p.report(Event{Type: EventStartFailed, Instance: pr.id, Reason: "instance did not start", Error: err.Error(), RetryIn: retry.String()})
	p.wg.Add(1)
	go p.stop(pr, "failed start")
}

// failLocked counts a failure and sets the next attempt; p.mu held.
func (p *Process) failLocked(err error) time.Duration {
	p.failures++
	p.probing = true
	d := p.cfg.BackoffMin
	for i := 1; i < p.failures && d < p.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, p.cfg.BackoffMax)
	p.nextAttempt = time.Now().Add(d)
	p.lastErr = err.Error()
	return d
}

// watch reaps pr and handles a crash.
func (p *Process) watch(pr *proc, cmd *exec.Cmd) {
	defer p.wg.Done()
	err := cmd.Wait()
	pr.exitErr = err
	close(pr.exited)
	p.mu.Lock()
	if pr.state != Ready {
		p.mu.Unlock()
		return // starting: start reports it; stopping: expected
	}
	pr.state = Stopping
	ferr := fmt.Errorf("exited: %v", exitReason(err))
	retry := p.failLocked(ferr)
	p.mu.Unlock()
	p.report(Event{Type: EventCrashed, Instance: pr.id, Reason: "instance exited on its own; it will be replaced", Error: ferr.Error(), RetryIn: retry.String()})
	p.wg.Add(1)
	go p.stop(pr, "crashed")
}

// stop drains pr out of the pool, terminates its process group and forgets
// it. pr.state is already Stopping.
func (p *Process) stop(pr *proc, why string) {
	defer p.wg.Done()
	defer p.poke()
	<-pr.spawned
	p.mu.Lock()
	inPool, pid := pr.inPool, pr.pid
	p.mu.Unlock()
	if inPool {
		if err := p.pool.Remove(pr.backend); err == nil {
			select {
			case <-pr.exited: // crashed: nothing to wait for
			default:
				ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DrainTimeout)
				err := p.pool.WaitDrained(ctx, pr.backend)
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					p.report(Event{Type: EventStopFailed, Instance: pr.id, Reason: "drain timed out; terminating with requests in flight", Error: err.Error()})
				}
			}
		}
	}
	if pid > 0 {
		select {
		case <-pr.exited:
		default:
			_ = syscall.Kill(-pid, syscall.SIGTERM)
			grace := time.NewTimer(p.cfg.StopGrace)
			select {
			case <-pr.exited:
				grace.Stop()
			case <-grace.C:
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				<-pr.exited
				p.report(Event{Type: EventStopFailed, Instance: pr.id, Reason: fmt.Sprintf("did not exit within %v of SIGTERM: killed", p.cfg.StopGrace)})
			}
		}
		// Whatever else the instance started in its group goes with it.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	p.mu.Lock()
	delete(p.procs, pr.id)
	p.mu.Unlock()
	p.log.Info("instance stopped", "instance", pr.id, "pid", pid, "reason", why)
}

// exitReason describes how a process ended.
func exitReason(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// freePort returns a TCP port that is free on host now.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// spawner forks children from one OS thread that stays alive as long as
// any child may: Linux sends a child its Pdeathsig when the thread that
// forked it exits, not the process, and Go may end an idle thread.
type spawner struct {
	reqs chan func()
	once sync.Once
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan func())}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		for f := range s.reqs {
			f()
		}
	}()
	return s
}

// do runs f on the spawning thread.
func (s *spawner) do(f func() error) error {
	errc := make(chan error, 1)
	s.reqs <- func() { errc <- f() }
	return <-errc
}

// close ends the spawning thread; only once no child is alive.
func (s *spawner) close() { s.once.Do(func() { close(s.reqs) }) }
