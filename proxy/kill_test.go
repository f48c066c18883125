package proxy

import (
	"bufio"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the backend process of TestBackendKilledUnderLoad:
// with envBackend set it serves HTTP instead of running tests.
const (
	envBackend = "SCALEOUT_PROXY_TEST_BACKEND" // record file for POST ids
)

func TestMain(m *testing.M) {
	if rec := os.Getenv(envBackend); rec != "" {
		os.Exit(runTestBackend(rec))
	}
	os.Exit(m.Run())
}

// runTestBackend listens on a free loopback port, prints it, and serves
// until killed: GET answers "ok", POST appends its X-Id to the record file
// (one write(2) per request, so a kill loses nothing already answered)
// before answering.
func runTestBackend(recordPath string) int {
	rec, err := os.OpenFile(recordPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	var mu sync.Mutex
	err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(time.Millisecond) // keep requests in flight
		if r.Method == http.MethodPost {
			mu.Lock()
			_, err := rec.WriteString(r.Header.Get("X-Id") + "\n")
			mu.Unlock()
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
		}
		fmt.Fprint(w, "ok")
	}))
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// startBackendProcess starts the test binary as a backend and returns the
// process and its URL.
func startBackendProcess(t *testing.T, record string) (*os.Process, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envBackend+"="+record)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTEN ") {
		t.Fatalf("backend process: %q, %v", line, err)
	}
	return cmd.Process, "http://" + strings.TrimSpace(strings.TrimPrefix(line, "LISTEN "))
}

// TestBackendKilledUnderLoad kills one of three backend processes while
// clients keep sending requests. Passive health is off: the proxy's retries
// alone must hide the failure from GETs, and must never send a POST twice.
func TestBackendKilledUnderLoad(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			dir := t.TempDir()
			var procs []*os.Process
			var urls, records []string
			for i := range 3 {
				rec := fmt.Sprintf("%s/backend%d", dir, i)
				proc, u := startBackendProcess(t, rec)
				procs = append(procs, proc)
				urls = append(urls, u)
				records = append(records, rec)
			}
			pool := testPool(t, urls...)
			p := New(Config{})
			addr := startProxy(t, p, pool, ServerConfig{})
			defer logErrorKinds(t, p)
			client := &http.Client{
				Transport: &http.Transport{MaxIdleConnsPerHost: 16},
				Timeout:   10 * time.Second,
			}
			defer client.CloseIdleConnections()

			const workers = 16
			var (
				stop     atomic.Bool
				ids      atomic.Int64
				mu       sync.Mutex
				answered = map[string]int{} // id → status
				failures []string
				wg       sync.WaitGroup
			)
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						id := fmt.Sprint("id-", ids.Add(1))
						req, _ := http.NewRequest(method, "http://"+addr+"/load", strings.NewReader("payload "+id))
						req.Header.Set("X-Id", id)
						resp, err := client.Do(req)
						status := 0
						if err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							status = resp.StatusCode
						}
						mu.Lock()
						answered[id] = status
						if status != 200 {
							failures = append(failures, fmt.Sprintf("%s: %d %v", id, status, err))
						}
						mu.Unlock()
					}
				}()
			}
			time.Sleep(400 * time.Millisecond)
			if err := procs[1].Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			time.Sleep(800 * time.Millisecond)
			stop.Store(true)
			wg.Wait()
			assertIdle(t, pool)

			t.Logf("%d requests, %d not answered 200", len(answered), len(failures))
			if len(answered) < 100 {
				t.Fatalf("only %d requests: the load did not run", len(answered))
			}
			if method == http.MethodGet {
				if len(failures) > 0 {
					t.Fatalf("%d GETs failed although retries should hide the kill: %v", len(failures), failures[:min(len(failures), 5)])
				}
				return
			}
			received := map[string]int{}
			for _, rec := range records {
				b, err := os.ReadFile(rec)
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range strings.Fields(string(b)) {
					received[id]++
				}
			}
			for id, n := range received {
				if n > 1 {
					t.Errorf("POST %s was received %d times", id, n)
				}
			}
			for id, status := range answered {
				if status == 200 && received[id] != 1 {
					t.Errorf("POST %s answered 200 but recorded %d times", id, received[id])
				}
			}
			// Only POSTs in flight on the killed backend may fail.
			if len(failures) > workers {
				t.Errorf("%d POSTs failed, more than were in flight: %v", len(failures), failures[:5])
			}
		})
	}
}

// logErrorKinds logs the proxy's failed tries by kind.
func logErrorKinds(t *testing.T, p *Proxy) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collector())
	var kinds []string
	for k := failKind(1); k < numFailKinds; k++ {
		if v := counterValue(t, reg, "scaleout_upstream_errors_total", map[string]string{"kind": failKindNames[k]}); v > 0 {
			kinds = append(kinds, fmt.Sprintf("%s=%v", failKindNames[k], v))
		}
	}
	t.Logf("failed tries: %v; retries: %v", kinds, counterValue(t, reg, "scaleout_retries_total", nil))
}
