package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scaleout/scaleout/config"
	"github.com/scaleout/scaleout/gateway"
)

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "gateway address (a free port is used when this one is taken)")
	admin := fs.String("admin", "127.0.0.1:9901", "admin API address (a free port is used when this one is taken)")
	edge := fs.String("edge", "127.0.0.1:8081", "CDN edge address (a free port is used when this one is taken)")
	n := fs.Int("backends", 3, "number of backend processes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *n < 1 || *n > 64 {
		fmt.Fprintf(stderr, "demo: --backends %d is out of range 1..64\n", *n)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	kids := &children{}
	defer kids.stopAll()
	var urls []string
	for i := 1; i <= *n; i++ {
		u, err := kids.startBackend(ctx, fmt.Sprintf("app-%d", i))
		if err != nil {
			fmt.Fprintf(stderr, "demo: starting backend %d: %v\n", i, err)
			return 1
		}
		urls = append(urls, u)
	}

	edgeAddr := orFree(*edge)
	if strings.HasSuffix(edgeAddr, ":0") {
		edgeAddr = freeLoopback()
	}
	_, edgePort, _ := net.SplitHostPort(edgeAddr)
	cdnHost := "http://cdn.localhost:" + edgePort

	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nadmin:\n  listen: %s\nupstreams:\n  app:\n    algorithm: round-robin\n    backends:\n", orFree(*listen), orFree(*admin))
	for _, u := range urls {
		fmt.Fprintf(&b, "      - url: %s\n", u)
	}
	b.WriteString("    health:\n      path: /health\n      interval: 1s\nroutes:\n  - path_prefix: /\n    upstream: app\n")
	fmt.Fprintf(&b, "    cdn:\n      host: %s\n      pull_header: X-From-CDN\n", cdnHost)
	g, errc, err := startGateway(ctx, b.String(), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	data, adm := g.Addrs()

	// The CDN edge: a second gateway with the HTTP cache in front of the
	// first, marking its pulls so that the origin can count offload.
	edgeCfg := fmt.Sprintf(`listen: %s
admin:
  listen: 127.0.0.1:0
cache:
  memory: {max_bytes: 64MiB}
upstreams:
  origin:
    backends: [{url: "http://%s"}]
    request_headers: {X-From-CDN: scaleout-demo-edge}
routes:
  - path_prefix: /
    upstream: origin
    cache: {enabled: true}
`, edgeAddr, data)
	_, edgeErrc, err := startGateway(ctx, edgeCfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "demo: CDN edge: %v\n", err)
		return 1
	}

	fmt.Fprintf(stdout, "scaleout demo: a gateway in front of %d backend processes, and a CDN edge\n\n", *n)
	for i, p := range kids.list() {
		fmt.Fprintf(stdout, "  backend app-%d   %s   pid %d\n", i+1, urls[i], p)
	}
	fmt.Fprintf(stdout, "\n  gateway     http://%s/\n  admin API   http://%s/api/upstreams\n  metrics     http://%s/metrics\n", data, adm, adm)
	fmt.Fprintf(stdout, "  CDN edge    %s/  (assets of the gateway's pages point here)\n  offload     http://%s/api/cdn\n\n", cdnHost, adm)
	fmt.Fprintf(stdout, "Try:  for i in 1 2 3 4 5 6; do curl -s http://%s/hello; done\n", data)
	fmt.Fprintf(stdout, "      curl -s -X POST http://%s/api/upstreams/app/backends/%s/drain\n", adm, strings.TrimPrefix(urls[0], "http://"))
	fmt.Fprintf(stdout, "\nCtrl-C stops the gateway and every backend.\n")
	err1, err2 := <-errc, <-edgeErrc
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "demo: stopped")
	return 0
}

// startGateway runs a gateway from YAML until ctx is done; errc yields
// Run's result.
func startGateway(ctx context.Context, yaml string, stderr io.Writer) (*gateway.Gateway, chan error, error) {
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		return nil, nil, err
	}
	cfg.Log.Level = "warn"
	g, err := gateway.New(cfg, gateway.Options{Logger: newLogger(cfg, stderr)})
	if err != nil {
		return nil, nil, err
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx) }()
	select {
	case <-g.Ready():
		return g, errc, nil
	case err := <-errc:
		return nil, nil, err
	}
}

// freeLoopback returns a loopback address with a port free right now.
func freeLoopback() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

// orFree returns addr if it can be bound now, else a free port on its host.
func orFree(addr string) string {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		l.Close()
		return addr
	}
	host, _, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, "0")
}

// children are processes the demo started; they die with it.
type children struct {
	mu    sync.Mutex
	procs []*exec.Cmd
	// spawn runs on one locked OS thread for the demo's lifetime: Linux
	// delivers Pdeathsig when the thread that forked a child exits, so
	// the forking thread must be one that never exits early.
	once  sync.Once
	spawn chan func()
}

func (c *children) run(f func()) {
	c.once.Do(func() {
		c.spawn = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the process
			for f := range c.spawn {
				f()
			}
		}()
	})
	done := make(chan struct{})
	c.spawn <- func() { f(); close(done) }
	<-done
}

// startBackend starts "scaleout backend" on a free port and returns its URL.
func (c *children) startBackend(ctx context.Context, name string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(self, "backend", "--listen", "127.0.0.1:0", "--name", name)
	cmd.Env = append(os.Environ(), fmt.Sprintf("SCALEOUT_PARENT_PID=%d", os.Getpid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	c.run(func() { err = cmd.Start() })
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.procs = append(c.procs, cmd)
	c.mu.Unlock()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	select {
	case line := <-lines:
		_, u, ok := strings.Cut(line, "listening on ")
		if !ok {
			return "", fmt.Errorf("unexpected first line %q", line)
		}
		return u, nil
	case <-time.After(10 * time.Second):
		return "", errors.New("backend did not start within 10s")
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (c *children) list() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pids []int
	for _, p := range c.procs {
		pids = append(pids, p.Process.Pid)
	}
	return pids
}

// stopAll sends SIGTERM, waits a little, then SIGKILLs what is left.
func (c *children) stopAll() {
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = p.Process.Kill()
				<-done
			}
		}()
	}
	wg.Wait()
}
