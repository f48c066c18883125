package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// lbFlags are the settings of `bench/run lb`.
type lbFlags struct {
	rounds        int
	duration      time.Duration
	warmup        time.Duration
	conns         int
	threads       int
	cores         []int
	pin           bool
	contenders    []string
	fixedRounds   int
	fixedCores    []int
	fixedDuration time.Duration
	fixedFraction float64
	idleConns     int
	slowConns     int
	memContenders []string
	profile       time.Duration
	body          int
	bin           string
	conf          string
	out           string
	args          []string
}

func parseLBFlags(args []string) (lbFlags, error) {
	fs := flag.NewFlagSet("lb", flag.ContinueOnError)
	var f lbFlags
	var cores, contenders, mem, fixedCores string
	fs.IntVar(&f.rounds, "rounds", 5, "measured rounds; each runs every contender once, in rotating order")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "length of one wrk run")
	fs.DurationVar(&f.warmup, "warmup", 3*time.Second, "unrecorded wrk run per contender before the rounds")
	fs.IntVar(&f.conns, "conns", 64, "client connections (wrk -c, openloop -conns)")
	fs.IntVar(&f.threads, "threads", 0, "wrk threads (default: the number of cores of the run)")
	fs.StringVar(&cores, "cores", "1,2", "comma-separated runs: cores (GOMAXPROCS, worker_processes, nbthread) per contender")
	fs.BoolVar(&f.pin, "pin", true, "in 1-core runs on a machine with 2+ CPUs, pin the contender to CPU 0 and the load and backends to the others")
	fs.StringVar(&contenders, "contenders", "direct,minimal,scaleout,nginx,haproxy,caddy",
		"contenders, in order (minimal: bench/minproxy, a bare fasthttp proxy)")
	fs.IntVar(&f.fixedRounds, "fixed-rounds", 3, "fixed-rate rounds (0: none)")
	fs.StringVar(&fixedCores, "fixed-cores", "1", "the runs (by cores) that get the fixed-rate rounds")
	fs.DurationVar(&f.fixedDuration, "fixed-duration", 10*time.Second, "length of one fixed-rate run")
	fs.Float64Var(&f.fixedFraction, "fixed-fraction", 0.5, "fixed rate as a fraction of nginx's median requests/s")
	fs.IntVar(&f.idleConns, "idle-conns", 10000, "memory test: idle keep-alive client connections (0: skip)")
	fs.IntVar(&f.slowConns, "slow-conns", 1000, "memory test: concurrent slow clients (0: skip)")
	fs.StringVar(&mem, "mem-contenders", "scaleout,nginx,haproxy,caddy", "contenders whose memory is measured")
	fs.DurationVar(&f.profile, "profile", 10*time.Second, "CPU profile of scaleout under wrk load this long (0: none)")
	fs.IntVar(&f.body, "body", 128, "backend response body bytes")
	fs.StringVar(&f.bin, "bin", "", "directory with the built binaries (scaleout, scaleoutprof, backend, openloop, holdconns, caddy)")
	fs.StringVar(&f.conf, "conf", "bench/lb", "directory with the configuration templates and report.lua")
	fs.StringVar(&f.out, "out", "bench/results", "directory for the results")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	f.args = args
	var err error
	if f.cores, err = intList("-cores", cores); err != nil {
		return f, err
	}
	if f.fixedCores, err = intList("-fixed-cores", fixedCores); err != nil {
		return f, err
	}
	known := map[string]bool{"direct": true, "minimal": true, "scaleout": true, "nginx": true, "haproxy": true, "caddy": true}
	for _, list := range []struct {
		dst *[]string
		src string
	}{{&f.contenders, contenders}, {&f.memContenders, mem}} {
		for _, c := range strings.Split(list.src, ",") {
			if c = strings.TrimSpace(c); c == "" {
				continue
			}
			if !known[c] {
				return f, fmt.Errorf("unknown contender %q (want direct, minimal, scaleout, nginx, haproxy, caddy)", c)
			}
			*list.dst = append(*list.dst, c)
		}
	}
	switch {
	case f.rounds < 1 || f.rounds > 50:
		return f, fmt.Errorf("-rounds %d: want 1..50", f.rounds)
	case f.duration < time.Second || f.duration > 5*time.Minute:
		return f, fmt.Errorf("-duration %v: want 1s..5m", f.duration)
	case f.conns < 1 || f.conns > 10000:
		return f, fmt.Errorf("-conns %d: want 1..10000", f.conns)
	case f.fixedFraction <= 0 || f.fixedFraction > 1:
		return f, fmt.Errorf("-fixed-fraction %v: want 0 < f <= 1", f.fixedFraction)
	case f.bin == "":
		return f, errors.New("-bin is required (bench/run sets it)")
	}
	return f, nil
}

// lbResult is the JSON written under bench/results/.
type lbResult struct {
	Scenario string          `json:"scenario"`
	Started  time.Time       `json:"started"`
	Command  string          `json:"command"`
	Machine  machine         `json:"machine"`
	Settings map[string]any  `json:"settings"`
	Runs     []lbRun         `json:"runs"`
	Memory   []memoryResult  `json:"memory,omitempty"`
	Profile  *profileResult  `json:"profile,omitempty"`
	Targets  []targetVerdict `json:"targets,omitempty"`
}

// lbRun is one run at a given number of cores per contender.
type lbRun struct {
	Cores      int       `json:"cores"`
	Pinned     bool      `json:"pinned"`
	WrkThreads int       `json:"wrk_threads"`
	Saturation []summary `json:"saturation"`
	FixedRate  float64   `json:"fixed_rate,omitempty"`
	Fixed      []summary `json:"fixed,omitempty"`
}

// lbEnv is what starting a contender needs.
type lbEnv struct {
	f        lbFlags
	dir      string   // scratch directory for rendered configs and logs
	backends []string // host:port
	cores    int
	cpus     string // taskset list for contenders; empty: none
	loadCPUs string // taskset list for wrk, openloop, backends
	nofile   int
}

// contender is one server under test, running.
type contender struct {
	name  string
	url   string
	admin string // scaleout's admin base URL, for /metrics
	proc  *proc  // nil for direct: its CPU is the first backend's
	pid   int
}

func runLB(ctx context.Context, args []string) error {
	f, err := parseLBFlags(args)
	if err != nil {
		return err
	}
	for _, b := range []string{"scaleout", "scaleoutprof", "minproxy", "backend", "openloop", "holdconns", "caddy"} {
		if _, err := os.Stat(filepath.Join(f.bin, b)); err != nil {
			return fmt.Errorf("missing binary: %w", err)
		}
	}
	for _, b := range []string{"wrk", "nginx", "haproxy", "taskset", "go"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("missing program: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "scaleout-bench-lb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return err
	}
	res := lbResult{
		Scenario: "lb",
		Started:  time.Now().UTC(),
		Command:  strings.TrimSpace("bench/run lb " + strings.Join(f.args, " ")),
		Machine:  machineInfo(ctx, f.bin),
		Settings: map[string]any{
			"rounds": f.rounds, "duration_s": f.duration.Seconds(), "warmup_s": f.warmup.Seconds(),
			"conns": f.conns, "body_bytes": f.body, "backends": 2, "pin": f.pin,
			"fixed_rounds": f.fixedRounds, "fixed_duration_s": f.fixedDuration.Seconds(), "fixed_fraction": f.fixedFraction,
			"idle_conns": f.idleConns, "slow_conns": f.slowConns, "profile_s": f.profile.Seconds(),
		},
	}
	stamp := res.Started.Format("2006-01-02T150405Z")
	fmt.Printf("# bench/run lb — %s\n\n%s\n\n", res.Started.Format(time.RFC3339), res.Machine.line())
	for _, cores := range f.cores {
		run, err := lbCoresRun(ctx, f, dir, cores)
		if err != nil {
			return err
		}
		res.Runs = append(res.Runs, run)
		fmt.Println(runMarkdown(f, run))
	}
	if (f.idleConns > 0 || f.slowConns > 0) && len(f.memContenders) > 0 {
		m, err := lbMemory(ctx, f, dir)
		if err != nil {
			return err
		}
		res.Memory = m
		fmt.Println(memoryMarkdown(m))
	}
	if f.profile > 0 {
		p, err := lbProfile(ctx, f, dir, stamp)
		if err != nil {
			return err
		}
		res.Profile = p
		fmt.Println(profileMarkdown(p))
	}
	res.Targets = targets(res.Runs)
	if len(res.Targets) > 0 {
		fmt.Println(targetsMarkdown(res.Targets))
	}
	path := filepath.Join(f.out, stamp+"-lb.json")
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	md := filepath.Join(f.out, stamp+"-lb.md")
	if err := os.WriteFile(md, []byte(fullMarkdown(f, res)), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s\n", path, md)
	return nil
}

func (e *lbEnv) startBackends(ctx context.Context, g *group) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	e.backends = nil
	for i, port := range ports {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p, err := startProc(procSpec{
			name: fmt.Sprintf("backend%d", i+1),
			argv: []string{filepath.Join(e.f.bin, "backend"), "-listen", addr, "-body", strconv.Itoa(e.f.body)},
			env:  []string{"GOMAXPROCS=1"},
			cpus: e.loadCPUs,
			dir:  e.dir,
		})
		if err != nil {
			return err
		}
		g.add(p)
		if err := waitHTTP(ctx, p, "http://"+addr+"/health"); err != nil {
			return err
		}
		e.backends = append(e.backends, addr)
	}
	return nil
}

// tmplData is what the configuration templates see.
type tmplData struct {
	Workers     int
	Listen      string
	AdminListen string
	Backends    []string
	Dir         string
	NoFile      int
	MaxConns    int
}

func (e *lbEnv) render(name string, d tmplData) (string, error) {
	t, err := template.ParseFiles(filepath.Join(e.f.conf, name+".tmpl"))
	if err != nil {
		return "", fmt.Errorf("reading template: %w", err)
	}
	path := filepath.Join(e.dir, name)
	w, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := t.Execute(w, d); err != nil {
		w.Close()
		return "", fmt.Errorf("rendering %s: %w", name, err)
	}
	return path, w.Close()
}

// start starts the named contender with e's core count and pinning.
func (e *lbEnv) start(ctx context.Context, name string, g *group, backendPID int) (*contender, error) {
	if name == "direct" {
		return &contender{name: name, url: "http://" + e.backends[0] + "/", pid: backendPID}, nil
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	d := tmplData{
		Workers:     e.cores,
		Listen:      fmt.Sprintf("127.0.0.1:%d", ports[0]),
		AdminListen: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Backends:    e.backends,
		Dir:         e.dir,
		NoFile:      e.nofile,
	}
	gomax := "GOMAXPROCS=" + strconv.Itoa(e.cores)
	spec := procSpec{name: name, cpus: e.cpus, dir: e.dir}
	switch name {
	case "scaleout", "scaleoutprof":
		path, err := e.render("scaleout.yaml", d)
		if err != nil {
			return nil, err
		}
		spec.argv = []string{filepath.Join(e.f.bin, "scaleout"), "serve", "--config", path, "--watch", "0"}
		if name == "scaleoutprof" {
			spec.argv = []string{filepath.Join(e.f.bin, "scaleoutprof"), "--config", path,
				"--cpuprofile", filepath.Join(e.dir, "cpu.pprof"), "--allocprofile", filepath.Join(e.dir, "allocs.pprof")}
		}
		spec.env = []string{gomax}
	case "minimal":
		spec.argv = []string{filepath.Join(e.f.bin, "minproxy"), "-listen", d.Listen}
		for _, b := range e.backends {
			spec.argv = append(spec.argv, "-backend", b)
		}
		spec.env = []string{gomax}
	case "nginx":
		d.MaxConns = e.nofile - 64
		path, err := e.render("nginx.conf", d)
		if err != nil {
			return nil, err
		}
		spec.argv = []string{"nginx", "-c", path, "-p", e.dir, "-e", filepath.Join(e.dir, "nginx-error.log")}
	case "haproxy":
		d.MaxConns = (e.nofile - 64) / 2
		path, err := e.render("haproxy.cfg", d)
		if err != nil {
			return nil, err
		}
		spec.argv = []string{"haproxy", "-db", "-f", path}
	case "caddy":
		path, err := e.render("Caddyfile", d)
		if err != nil {
			return nil, err
		}
		spec.argv = []string{filepath.Join(e.f.bin, "caddy"), "run", "--config", path, "--adapter", "caddyfile"}
		spec.env = []string{gomax, "HOME=" + e.dir, "XDG_CONFIG_HOME=" + e.dir, "XDG_DATA_HOME=" + e.dir}
	default:
		return nil, fmt.Errorf("unknown contender %q", name)
	}
	p, err := startProc(spec)
	if err != nil {
		return nil, err
	}
	g.add(p)
	url := "http://" + d.Listen + "/"
	if err := waitHTTP(ctx, p, url); err != nil {
		return nil, err
	}
	c := &contender{name: name, url: url, proc: p, pid: p.pid()}
	if name == "scaleout" || name == "scaleoutprof" {
		c.admin = "http://" + d.AdminListen
	}
	return c, nil
}

func nofile() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<20 {
		return 1 << 16
	}
	return int(r.Cur)
}

// lbCoresRun starts backends and every contender with the given cores,
// warms each up, then runs the rounds and the fixed-rate rounds.
func lbCoresRun(ctx context.Context, f lbFlags, dir string, cores int) (lbRun, error) {
	e := &lbEnv{f: f, dir: dir, cores: cores, nofile: nofile()}
	run := lbRun{Cores: cores, WrkThreads: f.threads}
	if run.WrkThreads == 0 {
		run.WrkThreads = cores
	}
	if f.pin && cores == 1 {
		if n := numCPU(); n >= 2 {
			e.cpus, e.loadCPUs = "0", fmt.Sprintf("1-%d", n-1)
			if n == 2 {
				e.loadCPUs = "1"
			}
			run.Pinned = true
		}
	}
	var g group
	defer g.stopAll()
	if err := e.startBackends(ctx, &g); err != nil {
		return run, err
	}
	backendPID := g.procs[0].pid()
	var cs []*contender
	for _, name := range f.contenders {
		c, err := e.start(ctx, name, &g, backendPID)
		if err != nil {
			return run, err
		}
		cs = append(cs, c)
	}
	load := wrkLoad{threads: run.WrkThreads, conns: f.conns, duration: f.warmup,
		script: filepath.Join(f.conf, "report.lua"), cpus: e.loadCPUs}
	logf("%d core(s): warming up %s", cores, names(cs))
	if f.warmup >= time.Second {
		for _, c := range cs {
			if _, err := load.run(ctx, c.url, 0); err != nil {
				return run, fmt.Errorf("warming up %s: %w", c.name, err)
			}
		}
	}
	load.duration = f.duration
	samples := make(map[string][]sample)
	for r := range f.rounds {
		for i := range cs {
			c := cs[(i+r)%len(cs)]
			s, err := load.run(ctx, c.url, c.pid)
			if err != nil {
				return run, fmt.Errorf("round %d, %s: %w", r+1, c.name, err)
			}
			logf("%d core(s), round %d/%d, %-8s %8.0f req/s  p50 %s  p99 %s  p99.9 %s  cpu %.2f  errors %d",
				cores, r+1, f.rounds, c.name, s.RPS, ms(s.P50US), ms(s.P99US), ms(s.P999US), s.CPUCores, s.Errors)
			samples[c.name] = append(samples[c.name], s)
		}
	}
	for _, c := range cs {
		run.Saturation = append(run.Saturation, summarize(c.name, samples[c.name]))
	}
	if f.fixedRounds < 1 || !slices.Contains(f.fixedCores, cores) {
		return run, nil
	}
	base := find(run.Saturation, "nginx")
	if base == nil {
		logf("no nginx in the contenders: fixed-rate run skipped")
		return run, nil
	}
	run.FixedRate = float64(int(base.RPS.Median * f.fixedFraction))
	ol := openLoad{bin: filepath.Join(f.bin, "openloop"), rate: run.FixedRate, conns: f.conns,
		duration: f.fixedDuration, cpus: e.loadCPUs}
	fixed := make(map[string][]sample)
	for r := range f.fixedRounds {
		for i := range cs {
			c := cs[(i+r)%len(cs)]
			s, err := ol.run(ctx, c.url, c.pid)
			if err != nil {
				return run, fmt.Errorf("fixed-rate round %d, %s: %w", r+1, c.name, err)
			}
			logf("%d core(s), fixed %.0f/s round %d/%d, %-8s p50 %s  p90 %s  p99 %s  p99.9 %s  cpu %.2f  errors %d",
				cores, run.FixedRate, r+1, f.fixedRounds, c.name, ms(s.P50US), ms(s.P90US), ms(s.P99US), ms(s.P999US), s.CPUCores, s.Errors)
			fixed[c.name] = append(fixed[c.name], s)
		}
	}
	for _, c := range cs {
		run.Fixed = append(run.Fixed, summarize(c.name, fixed[c.name]))
	}
	return run, nil
}

func names(cs []*contender) string {
	var n []string
	for _, c := range cs {
		n = append(n, c.name)
	}
	return strings.Join(n, ", ")
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05 ")+format+"\n", a...)
}

// memoryResult is the resident memory of one contender under held
// connections.
type memoryResult struct {
	Contender string  `json:"contender"`
	Mode      string  `json:"mode"` // idle | slow
	Conns     int     `json:"conns"`
	Opened    int     `json:"opened"`
	BaseKiB   int64   `json:"base_kib"`
	LoadedKiB int64   `json:"loaded_kib"`
	PerConnKB float64 `json:"per_conn_kib"`
	// For scaleout, from its /metrics: the Go heap and stacks in use and
	// the memory the runtime holds from the OS (RSS counts only the pages
	// touched; a buffer allocated but not yet written is in the heap, not
	// in RSS).
	GoHeapKiB  int64  `json:"go_heap_inuse_kib,omitempty"`
	GoStackKiB int64  `json:"go_stack_inuse_kib,omitempty"`
	GoSysKiB   int64  `json:"go_sys_kib,omitempty"`
	Note       string `json:"note,omitempty"`
}

// lbMemory measures each memory contender, freshly started with one core,
// holding idle and then slow client connections.
func lbMemory(ctx context.Context, f lbFlags, dir string) ([]memoryResult, error) {
	e := &lbEnv{f: f, dir: dir, cores: 1, nofile: nofile()}
	var bg group
	defer bg.stopAll()
	if err := e.startBackends(ctx, &bg); err != nil {
		return nil, err
	}
	var out []memoryResult
	for _, name := range f.memContenders {
		if name == "direct" {
			continue
		}
		for _, m := range []struct {
			mode string
			n    int
		}{{"idle", f.idleConns}, {"slow", f.slowConns}} {
			if m.n <= 0 {
				continue
			}
			n := m.n
			if name == "haproxy" {
				// HAProxy reserves two descriptors per connection and
				// refuses to start when maxconn does not fit the limit.
				n = min(n, (e.nofile-64)/2-64)
			}
			r, err := memoryOnce(ctx, e, name, m.mode, n)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				logf("memory %s %s: %v", name, m.mode, err)
				r.Note = err.Error()
			}
			logf("memory %-8s %s×%d: %d KiB → %d KiB (%.1f KiB per connection) %s",
				name, m.mode, m.n, r.BaseKiB, r.LoadedKiB, r.PerConnKB, r.Note)
			out = append(out, r)
		}
	}
	return out, nil
}

func memoryOnce(ctx context.Context, e *lbEnv, name, mode string, n int) (memoryResult, error) {
	r := memoryResult{Contender: name, Mode: mode, Conns: n}
	var g group
	defer g.stopAll()
	c, err := e.start(ctx, name, &g, 0)
	if err != nil {
		return r, err
	}
	warm := wrkLoad{threads: 1, conns: 8, duration: 2 * time.Second, script: filepath.Join(e.f.conf, "report.lua")}
	if _, err := warm.run(ctx, c.url, 0); err != nil {
		return r, err
	}
	time.Sleep(time.Second)
	r.BaseKiB = rssKiB(c.pid)
	hold := 30 * time.Second
	cctx, cancel := context.WithTimeout(ctx, hold+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, filepath.Join(e.f.bin, "holdconns"), "-addr", strings.TrimSuffix(strings.TrimPrefix(c.url, "http://"), "/"),
		"-n", strconv.Itoa(n), "-mode", mode, "-hold", hold.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return r, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return r, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	sc := bufio.NewScanner(stdout)
	ready := make(chan int, 1)
	go func() {
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				k, _ := strconv.Atoi(v)
				ready <- k
			}
		}
		close(ready)
	}()
	select {
	case k, ok := <-ready:
		if !ok {
			return r, fmt.Errorf("holdconns ended before it was ready: %s", stderr.String())
		}
		r.Opened = k
	case <-time.After(hold):
		return r, errors.New("holdconns not ready in time")
	case <-ctx.Done():
		return r, ctx.Err()
	}
	// Slow clients need a few seconds to have a request in progress
	// everywhere; idle ones settle at once.
	time.Sleep(5 * time.Second)
	r.LoadedKiB = rssKiB(c.pid)
	if c.admin != "" {
		m := goMemStats(ctx, c.admin+"/metrics")
		r.GoHeapKiB, r.GoStackKiB, r.GoSysKiB = m["go_memstats_heap_inuse_bytes"]/1024,
			m["go_memstats_stack_inuse_bytes"]/1024, m["go_memstats_sys_bytes"]/1024
	}
	if r.Opened > 0 {
		r.PerConnKB = float64(r.LoadedKiB-r.BaseKiB) / float64(r.Opened)
	}
	if r.Opened < n {
		r.Note = fmt.Sprintf("only %d of %d connections opened", r.Opened, n)
	}
	return r, nil
}

// profileResult is where the CPU profile of scaleout went and what it shows.
type profileResult struct {
	CPUProfile    string   `json:"cpu_profile"`
	AllocProfile  string   `json:"alloc_profile"`
	Requests      int64    `json:"requests"`
	RPS           float64  `json:"rps"`
	AllocsPerReq  float64  `json:"allocs_per_request"`
	BytesPerReq   float64  `json:"bytes_per_request"`
	GCCycles      uint32   `json:"gc_cycles"`
	TopCPU        []string `json:"top_cpu"`
	TopCPUCum     []string `json:"top_cpu_cum"`
	TopAllocs     []string `json:"top_allocs"`
	TopAllocBytes []string `json:"top_alloc_bytes"`
}

// lbProfile runs scaleoutprof (the same gateway) with one core under wrk
// load and keeps the CPU and allocation profiles.
func lbProfile(ctx context.Context, f lbFlags, dir, stamp string) (*profileResult, error) {
	e := &lbEnv{f: f, dir: dir, cores: 1, nofile: nofile()}
	if f.pin && numCPU() >= 2 {
		e.cpus, e.loadCPUs = "0", "1"
	}
	var g group
	defer g.stopAll()
	if err := e.startBackends(ctx, &g); err != nil {
		return nil, err
	}
	c, err := e.start(ctx, "scaleoutprof", &g, 0)
	if err != nil {
		return nil, err
	}
	load := wrkLoad{threads: 1, conns: f.conns, duration: 3 * time.Second, script: filepath.Join(f.conf, "report.lua"), cpus: e.loadCPUs}
	if _, err := load.run(ctx, c.url, 0); err != nil {
		return nil, err
	}
	load.duration = f.profile
	if err := syscall.Kill(c.pid, syscall.SIGUSR1); err != nil {
		return nil, err
	}
	s, err := load.run(ctx, c.url, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.Kill(c.pid, syscall.SIGUSR2); err != nil {
		return nil, err
	}
	var w struct {
		Seconds    float64 `json:"seconds"`
		Mallocs    uint64  `json:"mallocs"`
		AllocBytes uint64  `json:"alloc_bytes"`
		GCCycles   uint32  `json:"gc_cycles"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(c.proc.log)
		if lastJSON(string(b), &w) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("scaleoutprof wrote no profile summary:\n%s", c.proc.tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	p := &profileResult{
		CPUProfile:   filepath.Join(f.out, stamp+"-lb-cpu.pprof"),
		AllocProfile: filepath.Join(f.out, stamp+"-lb-allocs.pprof"),
		Requests:     s.Requests, RPS: s.RPS, GCCycles: w.GCCycles,
	}
	if s.Requests > 0 {
		p.AllocsPerReq = float64(w.Mallocs) / float64(s.Requests)
		p.BytesPerReq = float64(w.AllocBytes) / float64(s.Requests)
	}
	for _, cp := range [][2]string{
		{filepath.Join(dir, "cpu.pprof"), p.CPUProfile},
		{filepath.Join(dir, "allocs.pprof"), p.AllocProfile},
		{filepath.Join(dir, "allocs.pprof.base"), p.AllocProfile + ".base"},
	} {
		b, err := os.ReadFile(cp[0])
		if err != nil {
			return nil, fmt.Errorf("reading profile: %w", err)
		}
		if err := os.WriteFile(cp[1], b, 0o644); err != nil {
			return nil, err
		}
	}
	p.TopCPU = pprofTop(ctx, "-top", p.CPUProfile)
	p.TopCPUCum = pprofTop(ctx, "-top", "-cum", p.CPUProfile)
	p.TopAllocs = pprofTop(ctx, "-top", "-sample_index=alloc_objects", "-base", p.AllocProfile+".base", p.AllocProfile)
	p.TopAllocBytes = pprofTop(ctx, "-top", "-sample_index=alloc_space", "-base", p.AllocProfile+".base", p.AllocProfile)
	return p, nil
}

// lastJSON decodes the last line of s that is a JSON object.
func lastJSON(s string, v any) bool {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") && json.Unmarshal([]byte(lines[i]), v) == nil {
			return true
		}
	}
	return false
}

// pprofTop runs go tool pprof and returns its table lines (header and the
// first 25 entries).
func pprofTop(ctx context.Context, args ...string) []string {
	argv := append([]string{"tool", "pprof", "-nodecount=25"}, args...)
	out, err := exec.CommandContext(ctx, "go", argv...).CombinedOutput()
	if err != nil {
		return []string{"go " + strings.Join(argv, " ") + ": " + err.Error()}
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

func intList(flagName, v string) ([]int, error) {
	var out []int
	for _, c := range strings.Split(v, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 || n > 64 {
			return nil, fmt.Errorf("%s %q: want a comma-separated list of 1..64", flagName, v)
		}
		out = append(out, n)
	}
	return out, nil
}

// goMemStats reads the go_memstats_* gauges of a Prometheus text page.
func goMemStats(ctx context.Context, url string) map[string]int64 {
	out := map[string]int64{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return out
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && strings.HasPrefix(f[0], "go_memstats_") {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[f[0]] = int64(v)
			}
		}
	}
	return out
}
