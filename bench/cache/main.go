// Command cache-bench measures HTTP cache hit throughput side by side:
// scaleout's route cache (memory layer only, and with a Redis layer behind
// it; a hit is served from memory in both), nginx proxy_cache and Varnish,
// each on one core, under the same wrk load on one cacheable 2 KiB
// response, in alternating rounds. It is started by bench/cache/run, which
// installs and builds what it needs; see bench/cache/RESULTS.md.
//
//	cache-bench -scaleout BIN/scaleout -lua bench/lb/report.lua -rounds 5 -duration 8s
//	cache-bench backend -listen 127.0.0.1:9001 -body 2048   (the origin)
//
// Every load targets 127.0.0.1 and is bounded in time.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/scaleout/scaleout/bench/internal/benchkit"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "backend" {
		fs := flag.NewFlagSet("backend", flag.ExitOnError)
		listen := fs.String("listen", "127.0.0.1:9001", "address to listen on (loopback)")
		size := fs.Int("body", 2048, "response body size in bytes")
		_ = fs.Parse(os.Args[2:])
		if err := serveBackend(*listen, *size); err != nil {
			fmt.Fprintf(os.Stderr, "cache-bench backend: %v\n", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.StringVar(&o.scaleout, "scaleout", "", "scaleout binary (go build -o X ./cmd/scaleout)")
	flag.StringVar(&o.prof, "scaleoutprof", "", "bench/scaleoutprof binary for the hit-path CPU profile; empty: no profile")
	flag.StringVar(&o.lua, "lua", "bench/lb/report.lua", "wrk script printing WRKJSON")
	flag.StringVar(&o.dir, "dir", "", "working directory for configs, logs, profiles (default: a new temporary one)")
	flag.StringVar(&o.only, "only", "", "comma-separated contenders to run (default all: scaleout-mem,scaleout-redis,nginx,varnish)")
	flag.StringVar(&o.redis, "redis", "redis://127.0.0.1:6379/0", "Redis URL for the scaleout-redis contender")
	flag.IntVar(&o.rounds, "rounds", 5, "measured rounds per contender, in rotating order")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "length of one measured round")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "wrk warm-up per contender before the rounds")
	flag.DurationVar(&o.profile, "profile", 8*time.Second, "length of the hit-path CPU profile (0: none)")
	flag.IntVar(&o.conns, "c", 64, "wrk connections")
	flag.IntVar(&o.threads, "t", 1, "wrk threads")
	flag.IntVar(&o.body, "body", 2048, "response body size")
	flag.BoolVar(&o.pin, "pin", true, "pin every contender to CPU 0 and wrk and the origin to CPU 1")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintf(os.Stderr, "cache-bench: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	scaleout, prof, lua, dir, only, redis string
	rounds, conns, threads, body          int
	duration, warmup, profile             time.Duration
	pin                                   bool
}

// contender is one cache under test.
type contender struct {
	name string
	url  string
	p    *benchkit.Proc
	// hit reports whether a response was served from the cache, and the
	// header value that says so.
	hit func(h http.Header) (bool, string)
}

func run(ctx context.Context, o options) error {
	if o.scaleout == "" {
		return fmt.Errorf("-scaleout is required")
	}
	if o.rounds < 1 || o.rounds > 50 || o.duration < time.Second || o.duration > 2*time.Minute {
		return fmt.Errorf("-rounds 1..50 and -duration 1s..2m, got %d and %s", o.rounds, o.duration)
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "cache-bench-")
		if err != nil {
			return err
		}
		o.dir = d
	}
	// nginx's worker and varnishd's cache process drop root: let them in.
	if err := os.Chmod(o.dir, 0o777); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cpuC, cpuL := "", ""
	if o.pin {
		cpuC, cpuL = "0", "1"
	}

	var procs []*benchkit.Proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Stop()
		}
	}()
	bport, err := benchkit.FreePort()
	if err != nil {
		return err
	}
	backend := fmt.Sprintf("127.0.0.1:%d", bport)
	bp, err := benchkit.Start("origin", o.dir, cpuL, []string{"GOMAXPROCS=1"}, self, "backend", "-listen", backend, "-body", strconv.Itoa(o.body))
	if err != nil {
		return err
	}
	procs = append(procs, bp)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = benchkit.WaitReady(rctx, "http://"+backend+"/__fetches", bp)
	cancel()
	if err != nil {
		return err
	}

	want := map[string]bool{}
	for _, n := range strings.Split(o.only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			want[n] = true
		}
	}
	all := []string{"scaleout-mem", "scaleout-redis", "nginx", "varnish"}
	var cs []*contender
	for _, name := range all {
		if len(want) > 0 && !want[name] {
			continue
		}
		c, err := launch(name, o, backend, cpuC)
		if c != nil && c.p != nil {
			procs = append(procs, c.p)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		cs = append(cs, c)
	}
	if len(cs) == 0 {
		return fmt.Errorf("-only %q names no contender (%s)", o.only, strings.Join(all, ","))
	}

	load := benchkit.WrkLoad{Lua: o.lua, CPUs: cpuL, Threads: o.threads, Conns: o.conns, Duration: o.duration}
	for _, c := range cs {
		if err := warm(ctx, c); err != nil {
			return err
		}
		if o.warmup > 0 {
			if _, err := load.Run(ctx, c.url, o.warmup); err != nil {
				return err
			}
		}
	}

	loadStart := benchkit.LoadAvg()
	started := time.Now().UTC()
	res := map[string][]benchkit.WrkResult{}
	for r := 0; r < o.rounds; r++ {
		for i := range cs {
			c := cs[(i+r)%len(cs)]
			f0, err := fetches(ctx, backend)
			if err != nil {
				return err
			}
			cpu0 := benchkit.CPUSeconds(c.p.PID())
			w, err := load.Run(ctx, c.url, o.duration)
			if err != nil {
				return err
			}
			w.CPUSeconds = benchkit.CPUSeconds(c.p.PID()) - cpu0
			f1, err := fetches(ctx, backend)
			if err != nil {
				return err
			}
			w.OriginFetches = f1 - f0
			res[c.name] = append(res[c.name], w)
			fmt.Fprintf(os.Stderr, "round %d %-15s %9.0f req/s  p99 %6.2f ms  cpu %.2f  errors %d  origin fetches %d  (load %s)\n",
				r+1, c.name, w.RPS, float64(w.P99US)/1000, w.CPUSeconds/o.duration.Seconds(), w.Errors, w.OriginFetches, benchkit.LoadAvg())
		}
	}
	loadEnd := benchkit.LoadAvg()

	fmt.Printf("Measured %s UTC, %d rounds × %s per contender in rotating order, `wrk -t%d -c%d -d%s` on one URL",
		started.Format("2006-01-02 15:04"), o.rounds, o.duration, o.threads, o.conns, o.duration)
	if o.pin {
		fmt.Printf(", each contender pinned to CPU 0 (GOMAXPROCS=1, `worker_processes 1`, Varnish `thread_pools=1`), wrk and the origin to CPU 1")
	}
	fmt.Printf(". Load average %s at the start, %s at the end.\n\n", loadStart, loadEnd)
	report(os.Stdout, cs, res, o.duration)

	if o.profile > 0 && o.prof != "" {
		for _, c := range cs {
			c.p.Stop()
		}
		procs = procs[:1]
		pp, err := profileHitPath(ctx, o, backend, cpuC, load)
		if pp != nil {
			procs = append(procs, pp)
		}
		if err != nil {
			return fmt.Errorf("profiling: %w", err)
		}
	}
	return nil
}

// launch writes the contender's configuration and starts it.
func launch(name string, o options, backend, cpus string) (*contender, error) {
	port, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	c := &contender{name: name, url: "http://" + listen + "/object"}
	switch name {
	case "scaleout-mem", "scaleout-redis":
		cfg, err := scaleoutConfig(o, name, listen, backend)
		if err != nil {
			return nil, err
		}
		c.p, err = benchkit.Start(name, o.dir, cpus, []string{"GOMAXPROCS=1"}, o.scaleout, "serve", "--config", cfg, "--watch", "0")
		if err != nil {
			return nil, err
		}
		c.hit = func(h http.Header) (bool, string) { return h.Get("X-Cache") == "HIT", "X-Cache: " + h.Get("X-Cache") }
	case "nginx":
		dir := filepath.Join(o.dir, "nginx")
		if err := os.MkdirAll(filepath.Join(dir, "cache"), 0o777); err != nil {
			return nil, err
		}
		_ = os.Chmod(filepath.Join(dir, "cache"), 0o777)
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, listen, backend)), 0o644); err != nil {
			return nil, err
		}
		c.p, err = benchkit.Start(name, o.dir, cpus, nil, "nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
		if err != nil {
			return nil, err
		}
		c.hit = func(h http.Header) (bool, string) {
			return h.Get("X-Cache-Status") == "HIT", "X-Cache-Status: " + h.Get("X-Cache-Status")
		}
	case "varnish":
		dir := filepath.Join(o.dir, "varnish")
		c.p, err = benchkit.Start(name, o.dir, cpus, nil, "varnishd", "-F", "-a", listen, "-b", backend,
			"-s", "malloc,64m", "-n", dir, "-p", "thread_pools=1")
		if err != nil {
			return nil, err
		}
		// A hit names two transactions: the request's and the object's.
		c.hit = func(h http.Header) (bool, string) {
			return len(strings.Fields(h.Get("X-Varnish"))) == 2, "X-Varnish: " + h.Get("X-Varnish")
		}
	default:
		return nil, fmt.Errorf("unknown contender")
	}
	rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c, benchkit.WaitReady(rctx, c.url, c.p)
}

// nginxConf: proxy_cache with a keys zone, proxy_cache_valid, one worker,
// keep-alive to the origin, no access log. Arguments: prefix dir, listen,
// origin.
const nginxConf = `worker_processes 1;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; use epoll; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_timeout 60s;
    keepalive_requests 10000000;
    proxy_cache_path %[1]s/cache levels=1:2 keys_zone=bench:10m max_size=64m inactive=60m use_temp_path=off;
    upstream origin {
        server %[3]s;
        keepalive 16;
    }
    server {
        listen %[2]s;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
        }
    }
}
`

func scaleoutConfig(o options, name, listen, backend string) (string, error) {
	aport, err := benchkit.FreePort()
	if err != nil {
		return "", err
	}
	redis := ""
	if name == "scaleout-redis" {
		redis = fmt.Sprintf("  redis: {url: %q, prefix: \"scaleout:cache-bench:\"}\n", o.redis)
	}
	cfg := fmt.Sprintf(`listen: %s
admin:
  listen: 127.0.0.1:%d
log: {level: warn}
cache:
  memory: {max_bytes: 64MiB}
%supstreams:
  app:
    backends:
      - url: http://%s
routes:
  - path_prefix: /
    upstream: app
    cache: {enabled: true}
`, listen, aport, redis, backend)
	path := filepath.Join(o.dir, name+".yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

// warm requests the URL until the contender says it served a hit.
func warm(ctx context.Context, c *contender) error {
	cl := &http.Client{Timeout: 2 * time.Second}
	var last string
	for i := 0; i < 10; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
		resp, err := cl.Do(req)
		if err != nil {
			return fmt.Errorf("warming %s: %w", c.name, err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ok, h := c.hit(resp.Header)
		last = fmt.Sprintf("%d, %d bytes, %s", resp.StatusCode, n, h)
		if ok && resp.StatusCode == http.StatusOK {
			fmt.Fprintf(os.Stderr, "%s: hit after %d requests (%s)\n", c.name, i+1, last)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s never answered a hit (last: %s)", c.name, last)
}

func fetches(ctx context.Context, backend string) (int64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+backend+"/__fetches", nil)
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("asking the origin: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func report(w io.Writer, cs []*contender, res map[string][]benchkit.WrkResult, d time.Duration) {
	fmt.Fprintln(w, "| contender | req/s median | req/s min–max | p99 ms median (min–max) | CPU cores used | req/s per CPU-core | errors | origin fetches |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	med := map[string]float64{}
	eff := map[string]float64{}
	for _, c := range cs {
		var rps, p99, cpu, per []float64
		var errs, orig int64
		for _, r := range res[c.name] {
			rps = append(rps, r.RPS)
			p99 = append(p99, float64(r.P99US)/1000)
			cpu = append(cpu, r.CPUSeconds/d.Seconds())
			if r.CPUSeconds > 0 {
				per = append(per, float64(r.Requests)/r.CPUSeconds)
			}
			errs += r.Errors
			orig += r.OriginFetches
		}
		s, p, u, e := benchkit.Summarize(rps), benchkit.Summarize(p99), benchkit.Summarize(cpu), benchkit.Summarize(per)
		med[c.name], eff[c.name] = s.Med, e.Med
		fmt.Fprintf(w, "| %s | %.0f | %.0f–%.0f | %.2f (%.2f–%.2f) | %.2f | %.0f | %d | %d |\n",
			c.name, s.Med, s.Min, s.Max, p.Med, p.Min, p.Max, u.Med, e.Med, errs, orig)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| ratio | req/s (medians) | req/s per CPU-core (medians) |")
	fmt.Fprintln(w, "|---|---:|---:|")
	for _, s := range []string{"scaleout-mem", "scaleout-redis"} {
		for _, peer := range []string{"nginx", "varnish"} {
			if med[s] > 0 && med[peer] > 0 {
				fmt.Fprintf(w, "| %s / %s | %.2f | %.2f |\n", s, peer, med[s]/med[peer], ratio(eff[s], eff[peer]))
			}
		}
	}
	fmt.Fprintln(w)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// profileHitPath runs bench/scaleoutprof (the gateway with a CPU profile
// between SIGUSR1 and SIGUSR2) with the memory-only configuration under the
// same wrk load and prints the top of the profile.
func profileHitPath(ctx context.Context, o options, backend, cpus string, load benchkit.WrkLoad) (*benchkit.Proc, error) {
	port, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	cfg, err := scaleoutConfig(o, "scaleout-prof", listen, backend)
	if err != nil {
		return nil, err
	}
	cpuOut := filepath.Join(o.dir, "hit-cpu.pprof")
	p, err := benchkit.Start("scaleoutprof", o.dir, cpus, []string{"GOMAXPROCS=1"}, o.prof, "-config", cfg,
		"-cpuprofile", cpuOut, "-allocprofile", filepath.Join(o.dir, "hit-allocs.pprof"))
	if err != nil {
		return nil, err
	}
	c := &contender{name: "scaleoutprof", url: "http://" + listen + "/object", p: p,
		hit: func(h http.Header) (bool, string) { return h.Get("X-Cache") == "HIT", "X-Cache: " + h.Get("X-Cache") }}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err = benchkit.WaitReady(rctx, c.url, p)
	cancel()
	if err != nil {
		return p, err
	}
	if err := warm(ctx, c); err != nil {
		return p, err
	}
	if _, err := load.Run(ctx, c.url, 2*time.Second); err != nil {
		return p, err
	}
	_ = syscall.Kill(p.PID(), syscall.SIGUSR1)
	w, err := load.Run(ctx, c.url, o.profile)
	if err != nil {
		return p, err
	}
	_ = syscall.Kill(p.PID(), syscall.SIGUSR2)
	time.Sleep(time.Second)
	logb, _ := os.ReadFile(filepath.Join(o.dir, "scaleoutprof.log"))
	fmt.Printf("### Hit-path CPU profile\n\n`bench/scaleoutprof` (the gateway as `scaleout serve`, memory layer only, GOMAXPROCS=1, pinned) under the same wrk load for %s: %.0f req/s. Allocation window: `%s`. Profile: `%s`.\n\n",
		o.profile, w.RPS, strings.TrimSpace(lastLine(string(logb))), cpuOut)
	for _, args := range [][]string{
		{"-top", "-nodecount=25"},
		{"-top", "-cum", "-nodecount=25"},
		{"-top", "-cum", "-focus=gateway.*serveCached", "-nodecount=35"},
	} {
		out, err := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, args...), o.prof, cpuOut)...).CombinedOutput()
		if err != nil {
			return p, fmt.Errorf("go tool pprof: %w: %s", err, out)
		}
		fmt.Printf("`go tool pprof %s`:\n\n```\n%s```\n\n", strings.Join(args, " "), out)
	}
	return p, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
