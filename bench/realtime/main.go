// Command realtime-bench measures the realtime hub on loopback: it starts
// two hub nodes (this binary in node mode) sharing a Redis broker, opens
// -conns WebSocket connections spread over them, all subscribed to one
// channel, measures the nodes' memory per idle connection (RSS delta over
// connections), then publishes a broadcast on the channel at -rate messages
// per second for -duration through the nodes' publish APIs, alternating
// nodes, and reports messages delivered per second and the p50/p99 delivery
// latency (publish call to receipt, one clock).
//
// With -centrifugo PATH it runs the same scenario against two Centrifugo
// nodes with the Redis engine, side by side, and prints both.
//
//	bash bench/realtime/run.sh            # builds, raises ulimit -n, runs
//	go run ./bench/realtime -conns 2000   # smaller
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/redis/go-redis/v9"
	"github.com/scaleout/scaleout/realtime"
	"github.com/valyala/fasthttp"
)

var secret = []byte("bench-secret")

func main() {
	mode := flag.String("mode", "bench", "bench, or node (internal: run one hub node)")
	conns := flag.Int("conns", 10000, "WebSocket connections, spread over 2 nodes")
	rate := flag.Int("rate", 10, "broadcasts per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to broadcast")
	size := flag.Int("size", 100, "payload bytes")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address")
	keepHijacked := flag.Bool("keep-hijacked", true, "run the nodes' fasthttp servers with KeepHijackedConns (and the hub's ServerKeepsHijackedConns)")
	centrifugoFirst := flag.Bool("centrifugo-first", false, "run Centrifugo before scaleout (to see whether order matters)")
	centrifugo := flag.String("centrifugo", "", "path of a centrifugo binary to run the same scenario against")
	flag.Parse()
	var err error
	switch *mode {
	case "node":
		err = runNode(*redisAddr, *keepHijacked)
	case "bench":
		err = runBench(*conns, *rate, *duration, *size, *redisAddr, *centrifugo, *keepHijacked, *centrifugoFirst)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "realtime-bench:", err)
		os.Exit(1)
	}
}

// runNode serves one hub until stdin closes, printing "READY ws admin".
func runNode(redisAddr string, keepHijacked bool) error {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, PoolSize: 64})
	h, err := realtime.NewHub(realtime.Config{
		Broker: realtime.NewRedisBroker(rdb, realtime.RedisBrokerConfig{Prefix: "scaleout:rtbench"}),
		Secret: secret, SendQueue: 256, ServerKeepsHijackedConns: keepHijacked,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	go func() { _ = h.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &fasthttp.Server{Handler: h.ServeFastHTTP, KeepHijackedConns: keepHijacked}
	go func() { _ = srv.Serve(ln) }()
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("POST /api/publish", h.PublishHandler())
	go func() { _ = http.Serve(aln, mux) }()
	for !h.Status().BrokerUp {
		time.Sleep(5 * time.Millisecond)
	}
	if path := os.Getenv("RTBENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if os.Getenv("RTBENCH_MEMSTATS") != "" {
		go func() {
			for range time.Tick(3 * time.Second) {
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				fmt.Fprintf(os.Stderr, "node %d: conns %d heapInuse %d KB stackInuse %d KB sys %d KB goroutines %d numGC %d\n",
					os.Getpid(), h.Status().Connections, m.HeapInuse>>10, m.StackInuse>>10, m.Sys>>10, runtime.NumGoroutine(), m.NumGC)
			}
		}()
	}
	fmt.Printf("READY ws://%s/ws http://%s/api/publish\n", ln.Addr(), aln.Addr())
	<-ctx.Done()
	return nil
}

// target is one system under test: its node processes, how to connect and
// subscribe, and how to publish.
type target struct {
	name      string
	pids      []int
	wsURLs    []string
	connect   func(i int) (url string, hello [][]byte) // URL and frames to send after the upgrade
	publish   func(node int, payload []byte) error
	stop      func()
	confirmed func(frame []byte) bool // is frame the subscribe confirmation
}

type result struct {
	name                 string
	conns                int
	memPerConn           float64 // bytes
	rssBase, rssConns    int64
	sent, delivered      int64
	expected             int64
	deliveredPerSec      float64
	p50, p99, maxLatency time.Duration
	connectTime          time.Duration
}

func runBench(conns, rate int, duration time.Duration, size int, redisAddr, centrifugo string, keepHijacked, centrifugoFirst bool) error {
	var results []result
	runOurs := func() error {
		ours, err := startOurs(redisAddr, keepHijacked)
		if err != nil {
			return err
		}
		r, err := measure(ours, conns, rate, duration, size)
		ours.stop()
		if err != nil {
			return fmt.Errorf("scaleout: %w", err)
		}
		results = append(results, r)
		return nil
	}
	runCentrifugo := func() error {
		if centrifugo == "" {
			return nil
		}
		cf, err := startCentrifugo(centrifugo, redisAddr)
		if err != nil {
			return fmt.Errorf("centrifugo: %w", err)
		}
		r, err := measure(cf, conns, rate, duration, size)
		cf.stop()
		if err != nil {
			return fmt.Errorf("centrifugo: %w", err)
		}
		results = append(results, r)
		return nil
	}
	runs := []func() error{runOurs, runCentrifugo}
	if centrifugoFirst {
		runs[0], runs[1] = runs[1], runs[0]
	}
	for _, run := range runs {
		if err := run(); err != nil {
			return err
		}
	}
	fmt.Printf("\n%d connections over 2 nodes, broadcast %d msg/s for %v, %d-byte payload, Redis broker\n\n", conns, rate, duration, size)
	fmt.Println("| system | connect time | memory per idle connection | delivered/s | delivered / expected | p50 latency | p99 latency | max latency |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %v | %.1f KB | %.0f | %d / %d | %v | %v | %v |\n", r.name, r.connectTime.Round(time.Millisecond),
			r.memPerConn/1024, r.deliveredPerSec, r.delivered, r.expected,
			r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.maxLatency.Round(10*time.Microsecond))
	}
	return nil
}

func startNodeProc(args []string, env []string, ready func(line string) bool) (*exec.Cmd, io.WriteCloser, string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, "", err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, "", err
	}
	lines := make(chan string, 1)
	go func() {
		buf := make([]byte, 0, 4096)
		tmp := make([]byte, 4096)
		sent := false
		for {
			n, err := out.Read(tmp)
			if !sent {
				buf = append(buf, tmp[:n]...)
				for {
					i := bytes.IndexByte(buf, '\n')
					if i < 0 {
						break
					}
					line := string(buf[:i])
					buf = buf[i+1:]
					if ready(line) {
						lines <- line
						sent = true
						break
					}
				}
			}
			if err != nil {
				if !sent {
					close(lines)
				}
				return
			}
		}
	}()
	select {
	case l, ok := <-lines:
		if !ok {
			return nil, nil, "", errors.New("node exited before it was ready")
		}
		return cmd, stdin, l, nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return nil, nil, "", errors.New("node not ready within 30s")
	}
}

func startOurs(redisAddr string, keepHijacked bool) (*target, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	t := &target{name: "scaleout realtime"}
	if keepHijacked {
		t.name += " (KeepHijackedConns)"
	}
	var admins []string
	var cmds []*exec.Cmd
	var stdins []io.WriteCloser
	for range 2 {
		cmd, stdin, line, err := startNodeProc([]string{self, "-mode", "node", "-redis", redisAddr, "-keep-hijacked=" + strconv.FormatBool(keepHijacked)}, nil,
			func(l string) bool { return strings.HasPrefix(l, "READY ") })
		if err != nil {
			return nil, err
		}
		f := strings.Fields(line)
		t.wsURLs = append(t.wsURLs, f[1])
		admins = append(admins, f[2])
		t.pids = append(t.pids, cmd.Process.Pid)
		cmds = append(cmds, cmd)
		stdins = append(stdins, stdin)
	}
	tok, err := realtime.SignToken(secret, realtime.Claims{User: "bench", Channels: []string{"bench"}, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		return nil, err
	}
	t.connect = func(i int) (string, [][]byte) {
		return t.wsURLs[i%2] + "?token=" + tok, [][]byte{[]byte(`{"id":1,"op":"subscribe","channel":"bench"}`)}
	}
	t.confirmed = func(f []byte) bool { return bytes.Contains(f, []byte(`"type":"reply","id":1`)) }
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.publish = func(node int, payload []byte) error {
		body := append(append([]byte(`{"channel":"bench","data":`), payload...), '}')
		resp, err := client.Post(admins[node], "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("publish: %s", resp.Status)
		}
		return nil
	}
	t.stop = func() {
		for i, c := range cmds {
			_ = stdins[i].Close()
			done := make(chan struct{})
			go func() { _ = c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = c.Process.Kill()
				<-done
			}
		}
	}
	return t, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startCentrifugo runs two Centrifugo nodes with the Redis engine, anonymous
// connections and subscriptions allowed, presence and history off (the
// defaults).
func startCentrifugo(bin, redisAddr string) (*target, error) {
	dir, err := os.MkdirTemp("", "cfbench")
	if err != nil {
		return nil, err
	}
	t := &target{name: "Centrifugo"}
	var apis []string
	var cmds []*exec.Cmd
	for i := range 2 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cfg := map[string]any{
			"client": map[string]any{
				"allow_anonymous_connect_without_token": true,
				"allowed_origins":                       []string{"*"},
			},
			"channel": map[string]any{"without_namespace": map[string]any{
				"allow_subscribe_for_client":    true,
				"allow_subscribe_for_anonymous": true,
			}},
			"http_api": map[string]any{"key": "benchkey"},
			"engine": map[string]any{"type": "redis", "redis": map[string]any{
				"address": []string{"redis://" + redisAddr}, "prefix": "cfbench",
			}},
			"http_server": map[string]any{"address": "127.0.0.1", "port": port},
			"log":         map[string]any{"level": "error"},
		}
		b, _ := json.Marshal(cfg)
		path := filepath.Join(dir, fmt.Sprintf("config%d.json", i))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "--config", path)
		cmd.Stdout = io.Discard
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		cmds = append(cmds, cmd)
		base := fmt.Sprintf("127.0.0.1:%d", port)
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := net.Dial("tcp", base)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("centrifugo on %s not listening within 30s", base)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.wsURLs = append(t.wsURLs, "ws://"+base+"/connection/websocket")
		apis = append(apis, "http://"+base+"/api/publish")
		t.pids = append(t.pids, cmd.Process.Pid)
	}
	t.connect = func(i int) (string, [][]byte) {
		return t.wsURLs[i%2], [][]byte{[]byte(`{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"bench"}}`)}
	}
	t.confirmed = func(f []byte) bool { return bytes.Contains(f, []byte(`"id":2`)) }
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.publish = func(node int, payload []byte) error {
		body := append(append([]byte(`{"channel":"bench","data":`), payload...), '}')
		req, _ := http.NewRequest(http.MethodPost, apis[node], bytes.NewReader(body))
		req.Header.Set("X-API-Key", "benchkey")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || bytes.Contains(rb, []byte(`"error"`)) {
			return fmt.Errorf("publish: %s %s", resp.Status, rb)
		}
		return nil
	}
	t.stop = func() {
		for _, c := range cmds {
			_ = c.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = c.Process.Kill()
				<-done
			}
		}
		os.RemoveAll(dir)
	}
	return t, nil
}

func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func totalRSS(pids []int) (int64, error) {
	var sum int64
	for _, p := range pids {
		r, err := rss(p)
		if err != nil {
			return 0, err
		}
		sum += r
	}
	return sum, nil
}

// benchConn is one load-generator connection; it records the latency of
// every broadcast it receives.
type benchConn struct {
	conn net.Conn
	r    io.Reader
	lat  []int64
	n    atomic.Int64
	done chan struct{} // closed when read returns
}

var tsKey = []byte(`"ts":`)

func (c *benchConn) read(confirmed func([]byte) bool, ready chan<- error) {
	defer close(c.done)
	readySent := false
	for {
		f, err := ws.ReadFrame(c.r)
		if err != nil {
			if !readySent {
				ready <- err
			}
			return
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			_ = ws.WriteFrame(c.conn, ws.MaskFrameInPlace(ws.NewPongFrame(f.Payload)))
			continue
		case ws.OpClose:
			if !readySent {
				ready <- fmt.Errorf("closed: %q", f.Payload)
			}
			return
		}
		now := time.Now().UnixNano()
		// Centrifugo may batch several replies in one frame, one a line.
		for _, msg := range bytes.Split(f.Payload, []byte("\n")) {
			if len(msg) == 0 {
				continue
			}
			if msg[0] == '{' && len(msg) == 2 { // Centrifugo ping {}: answer {}
				_ = ws.WriteFrame(c.conn, ws.MaskFrameInPlace(ws.NewTextFrame([]byte("{}"))))
				continue
			}
			if !readySent && confirmed(msg) {
				readySent = true
				ready <- nil
				continue
			}
			i := bytes.Index(msg, tsKey)
			if i < 0 {
				continue
			}
			j := i + len(tsKey)
			k := j
			for k < len(msg) && msg[k] >= '0' && msg[k] <= '9' {
				k++
			}
			ts, err := strconv.ParseInt(string(msg[j:k]), 10, 64)
			if err != nil {
				continue
			}
			c.lat = append(c.lat, now-ts)
			c.n.Add(1)
		}
	}
}

func measure(t *target, conns, rate int, duration time.Duration, size int) (result, error) {
	res := result{name: t.name, conns: conns}
	runtimeSettle()
	base, err := totalRSS(t.pids)
	if err != nil {
		return res, err
	}
	res.rssBase = base
	cs := make([]*benchConn, conns)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	sem := make(chan struct{}, 64)
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			url, hello := t.connect(i)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, br, _, err := ws.Dialer{}.Dial(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			c := &benchConn{conn: conn, r: conn, done: make(chan struct{})}
			if br != nil {
				c.r = io.MultiReader(br, conn)
			}
			for _, h := range hello {
				if err := ws.WriteFrame(conn, ws.MaskFrameInPlace(ws.NewTextFrame(slices.Clone(h)))); err != nil {
					errs <- err
					return
				}
			}
			ready := make(chan error, 1)
			go c.read(t.confirmed, ready)
			select {
			case err := <-ready:
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
			case <-ctx.Done():
				errs <- fmt.Errorf("connection %d: no subscribe confirmation", i)
				return
			}
			cs[i] = c
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return res, err
	}
	res.connectTime = time.Since(start)
	defer func() {
		for _, c := range cs {
			_ = c.conn.Close()
		}
	}()
	runtimeSettle()
	after, err := totalRSS(t.pids)
	if err != nil {
		return res, err
	}
	res.rssConns = after
	res.memPerConn = float64(after-base) / float64(conns)

	pad := strings.Repeat("x", max(0, size-40))
	interval := time.Second / time.Duration(rate)
	total := int(duration / interval)
	tick := time.NewTicker(interval)
	pubStart := time.Now()
	for i := range total {
		<-tick.C
		payload := fmt.Appendf(nil, `{"ts":%d,"pad":%q}`, time.Now().UnixNano(), pad)
		if err := t.publish(i%2, payload); err != nil {
			tick.Stop()
			return res, err
		}
		res.sent++
	}
	tick.Stop()
	res.expected = res.sent * int64(conns)
	// Wait for the stragglers, at most 10s.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int64
		for _, c := range cs {
			n += c.n.Load()
		}
		if n >= res.expected {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(pubStart)
	for _, c := range cs {
		_ = c.conn.SetReadDeadline(time.Now())
	}
	for _, c := range cs {
		<-c.done
	}
	var all []int64
	for _, c := range cs {
		res.delivered += c.n.Load()
		all = append(all, c.lat...)
	}
	res.deliveredPerSec = float64(res.delivered) / elapsed.Seconds()
	if len(all) > 0 {
		slices.Sort(all)
		res.p50 = time.Duration(all[len(all)/2])
		res.p99 = time.Duration(all[len(all)*99/100])
		res.maxLatency = time.Duration(all[len(all)-1])
	}
	return res, nil
}

// runtimeSettle gives the nodes a moment to finish what they were doing
// before their memory is read.
func runtimeSettle() { time.Sleep(2 * time.Second) }
