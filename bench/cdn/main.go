// Command cdn-bench measures what CDN rewriting costs the gateway: the same
// real HTML page through one scaleout gateway on two routes, one with
// `cdn: {host: ...}` (asset URLs rewritten as the page streams through) and
// one without, under the same wrk load in alternating rounds; beside them,
// a third route rewriting with the HTTP cache in front (the rewrite runs
// once per TTL), and wrk straight to the origin as the ceiling. It is started by
// bench/cdn/run; see bench/cdn/RESULTS.md.
//
//	cdn-bench -scaleout BIN/scaleout -lua bench/lb/report.lua -page /usr/share/doc/valgrind/html/manual-core.html
//	cdn-bench static -listen 127.0.0.1:9001 -page FILE   (the origin)
//
// Every load targets 127.0.0.1 and is bounded in time.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/scaleout/scaleout/bench/internal/benchkit"
)

// cdnHost is the CDN host the rewriting route points assets at.
const cdnHost = "http://cdn.localhost:9999"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "static" {
		fs := flag.NewFlagSet("static", flag.ExitOnError)
		listen := fs.String("listen", "127.0.0.1:9001", "address to listen on (loopback)")
		page := fs.String("page", "", "HTML file served on every path")
		_ = fs.Parse(os.Args[2:])
		if err := serveStatic(*listen, *page); err != nil {
			fmt.Fprintf(os.Stderr, "cdn-bench static: %v\n", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.StringVar(&o.scaleout, "scaleout", "", "scaleout binary (go build -o X ./cmd/scaleout)")
	flag.StringVar(&o.lua, "lua", "bench/lb/report.lua", "wrk script printing WRKJSON")
	flag.StringVar(&o.page, "page", "/usr/share/doc/valgrind/html/manual-core.html", "the real HTML page")
	flag.StringVar(&o.dir, "dir", "", "working directory for configs and logs (default: a new temporary one)")
	flag.IntVar(&o.rounds, "rounds", 5, "measured rounds per target, in rotating order")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "length of one measured round")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "wrk warm-up per target before the rounds")
	flag.IntVar(&o.conns, "c", 16, "wrk connections")
	flag.IntVar(&o.threads, "t", 1, "wrk threads")
	flag.BoolVar(&o.direct, "direct", true, "also measure wrk straight to the origin (the ceiling)")
	flag.BoolVar(&o.pin, "pin", true, "pin the gateway to CPU 0 and wrk and the origin to CPU 1")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintf(os.Stderr, "cdn-bench: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	scaleout, lua, page, dir string
	rounds, conns, threads   int
	duration, warmup         time.Duration
	direct, pin              bool
}

// target is one URL under load; p is the process whose CPU is counted.
type target struct {
	name, url string
	p         *benchkit.Proc
}

func run(ctx context.Context, o options) error {
	if o.scaleout == "" {
		return fmt.Errorf("-scaleout is required")
	}
	if o.rounds < 1 || o.rounds > 50 || o.duration < time.Second || o.duration > 2*time.Minute {
		return fmt.Errorf("-rounds 1..50 and -duration 1s..2m, got %d and %s", o.rounds, o.duration)
	}
	page, err := os.ReadFile(o.page)
	if err != nil {
		return fmt.Errorf("reading the page: %w", err)
	}
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "cdn-bench-"); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cpuG, cpuL := "", ""
	if o.pin {
		cpuG, cpuL = "0", "1"
	}
	var procs []*benchkit.Proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Stop()
		}
	}()

	oport, err := benchkit.FreePort()
	if err != nil {
		return err
	}
	origin := fmt.Sprintf("127.0.0.1:%d", oport)
	op, err := benchkit.Start("origin", o.dir, cpuL, []string{"GOMAXPROCS=1"}, self, "static", "-listen", origin, "-page", o.page)
	if err != nil {
		return err
	}
	procs = append(procs, op)
	gport, err := benchkit.FreePort()
	if err != nil {
		return err
	}
	aport, err := benchkit.FreePort()
	if err != nil {
		return err
	}
	gw := fmt.Sprintf("127.0.0.1:%d", gport)
	cfg := filepath.Join(o.dir, "scaleout.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(gatewayConf, gw, aport, origin, cdnHost)), 0o644); err != nil {
		return err
	}
	gp, err := benchkit.Start("scaleout", o.dir, cpuG, []string{"GOMAXPROCS=1"}, o.scaleout, "serve", "--config", cfg, "--watch", "0")
	if err != nil {
		return err
	}
	procs = append(procs, gp)

	name := filepath.Base(o.page)
	ts := []*target{
		{name: "scaleout, cdn rewriting", url: "http://" + gw + "/rewrite/" + name, p: gp},
		{name: "scaleout, no rewriting", url: "http://" + gw + "/plain/" + name, p: gp},
		{name: "scaleout, cdn rewriting + cache", url: "http://" + gw + "/cached/" + name, p: gp},
	}
	if o.direct {
		ts = append(ts, &target{name: "origin direct (no gateway)", url: "http://" + origin + "/" + name, p: op})
	}
	for _, t := range ts {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := benchkit.WaitReady(rctx, t.url, t.p)
		cancel()
		if err != nil {
			return err
		}
	}
	refs, rewritten, err := check(ctx, ts, page)
	if err != nil {
		return err
	}

	load := benchkit.WrkLoad{Lua: o.lua, CPUs: cpuL, Threads: o.threads, Conns: o.conns, Duration: o.duration}
	for _, t := range ts {
		if o.warmup > 0 {
			if _, err := load.Run(ctx, t.url, o.warmup); err != nil {
				return err
			}
		}
	}
	loadStart := benchkit.LoadAvg()
	started := time.Now().UTC()
	res := map[string][]benchkit.WrkResult{}
	for r := 0; r < o.rounds; r++ {
		for i := range ts {
			t := ts[(i+r)%len(ts)]
			cpu0 := benchkit.CPUSeconds(t.p.PID())
			w, err := load.Run(ctx, t.url, o.duration)
			if err != nil {
				return err
			}
			w.CPUSeconds = benchkit.CPUSeconds(t.p.PID()) - cpu0
			res[t.name] = append(res[t.name], w)
			fmt.Fprintf(os.Stderr, "round %d %-28s %7.0f req/s  p99 %7.2f ms  cpu %.2f  errors %d  (load %s)\n",
				r+1, t.name, w.RPS, float64(w.P99US)/1000, w.CPUSeconds/o.duration.Seconds(), w.Errors, benchkit.LoadAvg())
		}
	}
	fmt.Printf("Page: `%s` (%d bytes; %d asset references rewritten to `%s`, the rewritten page is %d bytes). "+
		"Measured %s UTC, %d rounds × %s per target in rotating order, `wrk -t%d -c%d -d%s`",
		o.page, len(page), refs, cdnHost, rewritten, started.Format("2006-01-02 15:04"), o.rounds, o.duration,
		o.threads, o.conns, o.duration)
	if o.pin {
		fmt.Printf(", the gateway pinned to CPU 0 with GOMAXPROCS=1, wrk and the origin to CPU 1")
	}
	fmt.Printf(". Load average %s at the start, %s at the end.\n\n", loadStart, benchkit.LoadAvg())
	report(os.Stdout, ts, res, o.duration)
	return nil
}

// gatewayConf: one upstream, three routes to it: rewriting, plain, and
// rewriting with the HTTP cache in front (the origin sends no freshness,
// so default_ttl makes the rewritten page cacheable). Arguments: listen,
// admin port, origin, CDN host.
const gatewayConf = `listen: %s
admin:
  listen: 127.0.0.1:%d
log: {level: warn}
upstreams:
  site:
    backends:
      - url: http://%s
routes:
  - path_prefix: /rewrite
    upstream: site
    cdn: {host: %s}
  - path_prefix: /plain
    upstream: site
  - path_prefix: /cached
    upstream: site
    cdn: {host: %[4]s}
    cache: {enabled: true, default_ttl: 1h}
`

// check fetches every target once: the plain route and the origin must
// return the page unchanged, the rewriting route the page with asset URLs
// on the CDN host. It returns the number of CDN references and the size of
// the rewritten page.
func check(ctx context.Context, ts []*target, page []byte) (refs, size int, err error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	for _, t := range ts {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
		resp, err := cl.Do(req)
		if err != nil {
			return 0, 0, fmt.Errorf("checking %s: %w", t.name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("checking %s: status %d, %v", t.name, resp.StatusCode, err)
		}
		n := bytes.Count(body, []byte(cdnHost))
		if strings.Contains(t.url, "/cached/") {
			// Filled by the check, so the rounds measure hits.
			if n == 0 || resp.Header.Get("X-Cache") == "" {
				return 0, 0, fmt.Errorf("checking %s: %d URLs point at %s, X-Cache %q", t.name, n, cdnHost, resp.Header.Get("X-Cache"))
			}
			continue
		}
		if strings.Contains(t.url, "/rewrite/") {
			if n == 0 {
				return 0, 0, fmt.Errorf("checking %s: no URL points at %s", t.name, cdnHost)
			}
			refs, size = n, len(body)
			fmt.Fprintf(os.Stderr, "%s: %d references to %s, %d bytes (page %d)\n", t.name, n, cdnHost, len(body), len(page))
			continue
		}
		if !bytes.Equal(body, page) {
			return 0, 0, fmt.Errorf("checking %s: the page came back changed (%d bytes, page %d)", t.name, len(body), len(page))
		}
	}
	return refs, size, nil
}

func report(w io.Writer, ts []*target, res map[string][]benchkit.WrkResult, d time.Duration) {
	fmt.Fprintln(w, "| target | req/s median | req/s min–max | p99 ms median (min–max) | MB/s to clients | CPU cores used | CPU ms per page | errors |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	med := map[string]float64{}
	cpuPer := map[string]float64{}
	for _, t := range ts {
		var rps, p99, mbs, cpu, per []float64
		var errs int64
		for _, r := range res[t.name] {
			rps = append(rps, r.RPS)
			p99 = append(p99, float64(r.P99US)/1000)
			mbs = append(mbs, float64(r.Bytes)/(float64(r.DurationUS)/1e6)/1e6)
			cpu = append(cpu, r.CPUSeconds/d.Seconds())
			if r.Requests > 0 {
				per = append(per, r.CPUSeconds*1000/float64(r.Requests))
			}
			errs += r.Errors
		}
		s, p, m, u, c := benchkit.Summarize(rps), benchkit.Summarize(p99), benchkit.Summarize(mbs), benchkit.Summarize(cpu), benchkit.Summarize(per)
		med[t.name], cpuPer[t.name] = s.Med, c.Med
		fmt.Fprintf(w, "| %s | %.0f | %.0f–%.0f | %.2f (%.2f–%.2f) | %.0f | %.2f | %.3f | %d |\n",
			t.name, s.Med, s.Min, s.Max, p.Med, p.Min, p.Max, m.Med, u.Med, c.Med, errs)
	}
	fmt.Fprintln(w)
	rw, plain := ts[0].name, ts[1].name
	if med[plain] > 0 {
		fmt.Fprintf(w, "Rewriting / no rewriting: %.2f × the requests/s (medians); the gateway's CPU per page %.3f ms with rewriting, %.3f ms without (%.3f ms for the rewrite, %.2f ×).\n\n",
			med[rw]/med[plain], cpuPer[rw], cpuPer[plain], cpuPer[rw]-cpuPer[plain], ratio(cpuPer[rw], cpuPer[plain]))
	}
	if cached := ts[2].name; med[plain] > 0 && med[cached] > 0 {
		fmt.Fprintf(w, "Rewriting behind the cache / no rewriting: %.2f × the requests/s (medians).\n\n", med[cached]/med[plain])
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
