package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scaleout/scaleout/balancer"
)

// assertIdle waits until no backend of pool has a request in flight: every
// Pick got its Done.
func assertIdle(t *testing.T, pool *balancer.Pool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := ""
		for _, b := range pool.Backends() {
			if n := b.Active(); n != 0 {
				busy += fmt.Sprintf(" %s:%d", b.ID, n)
			}
		}
		if busy == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests still in flight (Pick without Done):%s", busy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// deadURL returns the URL of a loopback port that refuses connections.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// countingBackend answers status for every request and counts requests by
// method and X-Id.
type countingBackend struct {
	mu   sync.Mutex
	seen map[string]int
	n    atomic.Int64
}

func newCountingBackend(t *testing.T, status int) (*countingBackend, string) {
	cb := &countingBackend{seen: map[string]int{}}
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		cb.n.Add(1)
		cb.mu.Lock()
		cb.seen[r.Method+" "+r.Header.Get("X-Id")]++
		cb.mu.Unlock()
		w.WriteHeader(status)
		fmt.Fprintf(w, "status %d\n", status)
	})
	return cb, s.URL
}

func (cb *countingBackend) count(key string) int {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return cb.seen[key]
}

func do(t *testing.T, addr, method, id, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+"/x", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestNoHealthyBackend(t *testing.T) {
	pool := testPool(t)
	addr := startProxy(t, New(Config{}), pool, ServerConfig{})
	code, body, h := do(t, addr, "GET", "1", "")
	if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(body, "app") {
		t.Fatalf("got %d %q Retry-After=%q, want 503 naming the upstream with Retry-After", code, body, h.Get("Retry-After"))
	}
}

func TestAllBackendsFail(t *testing.T) {
	tests := []struct {
		name     string
		urls     func(t *testing.T) []string
		cfg      Config
		wantCode int
	}{
		{"connection refused everywhere gives 502", func(t *testing.T) []string {
			return []string{deadURL(t), deadURL(t), deadURL(t)}
		}, Config{}, 502},
		{"no response headers in time gives 504", func(t *testing.T) []string {
			return []string{silentBackend(t)}
		}, Config{ResponseHeaderTimeout: 200 * time.Millisecond}, 504},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := testPool(t, tt.urls(t)...)
			addr := startProxy(t, New(tt.cfg), pool, ServerConfig{})
			code, body, _ := do(t, addr, "GET", "1", "")
			if code != tt.wantCode || !strings.Contains(body, "app") {
				t.Fatalf("got %d %q, want %d naming the upstream", code, body, tt.wantCode)
			}
			assertIdle(t, pool)
		})
	}
}

// silentBackend accepts connections and never answers.
func silentBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c) //nolint:errcheck
		}
	}()
	return "http://" + ln.Addr().String()
}

// hangupBackend reads each request whole, counts it, and closes the
// connection without answering: the request reached it.
func hangupBackend(t *testing.T) (*atomic.Int64, string) {
	t.Helper()
	var n atomic.Int64
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		n.Add(1)
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	})
	return &n, s.URL
}

func TestRetries(t *testing.T) {
	t.Run("connect failure: any method goes to another backend", func(t *testing.T) {
		live, liveURL := newCountingBackend(t, 200)
		pool := testPool(t, deadURL(t), liveURL)
		addr := startProxy(t, New(Config{}), pool, ServerConfig{})
		for i := range 4 {
			id := fmt.Sprint("p", i)
			if code, body, _ := do(t, addr, "POST", id, "payload"); code != 200 {
				t.Fatalf("POST %s: %d %q", id, code, body)
			}
			if n := live.count("POST " + id); n != 1 {
				t.Fatalf("POST %s reached the live backend %d times", id, n)
			}
		}
		assertIdle(t, pool)
	})
	t.Run("503 is retried for GET, relayed for POST", func(t *testing.T) {
		bad, badURL := newCountingBackend(t, 503)
		good, goodURL := newCountingBackend(t, 200)
		pool := testPool(t, badURL, goodURL)
		addr := startProxy(t, New(Config{}), pool, ServerConfig{})
		for i := range 4 {
			if code, _, _ := do(t, addr, "GET", fmt.Sprint("g", i), ""); code != 200 {
				t.Fatalf("GET %d: %d, want 200 from the good backend", i, code)
			}
		}
		var got503 int
		for i := range 4 {
			id := fmt.Sprint("p", i)
			code, _, _ := do(t, addr, "POST", id, "x")
			if code == 503 {
				got503++
			}
			if n := bad.count("POST "+id) + good.count("POST "+id); n != 1 {
				t.Fatalf("POST %s was received %d times", id, n)
			}
		}
		if got503 == 0 {
			t.Fatal("no POST got the 503: were POSTs retried?")
		}
		assertIdle(t, pool)
	})
	t.Run("503 is retried for PUT only if its body is held in memory", func(t *testing.T) {
		bad, badURL := newCountingBackend(t, 503)
		good, goodURL := newCountingBackend(t, 200)
		pool := testPool(t, badURL, goodURL)
		addr := startProxy(t, New(Config{Retries: RetryConfig{ReplayBodyBytes: 1000}}), pool, ServerConfig{})
		for i := range 4 {
			if code, _, _ := do(t, addr, "PUT", fmt.Sprint("small", i), strings.Repeat("s", 1000)); code != 200 {
				t.Fatalf("small PUT %d: %d, want it retried to 200", i, code)
			}
		}
		var got503 int
		for i := range 4 {
			id := fmt.Sprint("large", i)
			code, _, _ := do(t, addr, "PUT", id, strings.Repeat("l", 1001))
			if code == 503 {
				got503++
			}
			if n := bad.count("PUT "+id) + good.count("PUT "+id); n != 1 {
				t.Fatalf("streamed PUT %s was received %d times", id, n)
			}
		}
		if got503 == 0 {
			t.Fatal("no streamed PUT got the 503")
		}
		assertIdle(t, pool)
	})
	t.Run("a request that reached a backend that hung up: GET retried, POST never resent", func(t *testing.T) {
		hung, hungURL := hangupBackend(t)
		good, goodURL := newCountingBackend(t, 200)
		pool := testPool(t, hungURL, goodURL)
		addr := startProxy(t, New(Config{}), pool, ServerConfig{})
		for i := range 4 {
			if code, _, _ := do(t, addr, "GET", fmt.Sprint("g", i), ""); code != 200 {
				t.Fatalf("GET %d: %d", i, code)
			}
		}
		before := hung.Load()
		var got502 int
		for i := range 4 {
			id := fmt.Sprint("p", i)
			code, _, _ := do(t, addr, "POST", id, "x")
			if code == 502 {
				got502++
			}
			if code != 200 && code != 502 {
				t.Fatalf("POST %s: %d", id, code)
			}
		}
		if hung.Load()-before != int64(got502) || good.count("POST p0")+good.count("POST p1")+good.count("POST p2")+good.count("POST p3") != 4-got502 {
			t.Fatalf("hung-up backend got %d POSTs, %d answered 502, good backend %v: a POST was sent twice",
				hung.Load()-before, got502, good.seen)
		}
		if got502 == 0 {
			t.Fatal("no POST reached the hung-up backend")
		}
		assertIdle(t, pool)
	})
	t.Run("tries are bounded by Max", func(t *testing.T) {
		var urls []string
		var cbs []*countingBackend
		for range 5 {
			cb, u := newCountingBackend(t, 502)
			cbs = append(cbs, cb)
			urls = append(urls, u)
		}
		pool := testPool(t, urls...)
		addr := startProxy(t, New(Config{Retries: RetryConfig{Max: 2, BudgetBurst: 100}}), pool, ServerConfig{})
		code, _, _ := do(t, addr, "GET", "1", "")
		var total int64
		for _, cb := range cbs {
			total += cb.n.Load()
		}
		if code != 502 || total != 3 {
			t.Fatalf("got %d after %d tries, want 502 after 3", code, total)
		}
		assertIdle(t, pool)
	})
	t.Run("retries of answered requests are bounded by the budget", func(t *testing.T) {
		bad, badURL := newCountingBackend(t, 503)
		_, goodURL := newCountingBackend(t, 200)
		pool := testPool(t, badURL, goodURL)
		addr := startProxy(t, New(Config{Retries: RetryConfig{BudgetPercent: 1, BudgetBurst: 2}}), pool, ServerConfig{})
		var got503 int
		for i := range 20 {
			if code, _, _ := do(t, addr, "GET", fmt.Sprint(i), ""); code == 503 {
				got503++
			}
		}
		// 20 requests, half first sent to the bad backend: 2 retries from
		// the burst, then the 503s are relayed.
		if got503 < 5 || bad.n.Load() < 7 {
			t.Fatalf("%d of 20 GETs got 503 (bad backend hit %d times); want the budget to stop retries", got503, bad.n.Load())
		}
		assertIdle(t, pool)
	})
	t.Run("a dead keep-alive connection is not used for a POST", func(t *testing.T) {
		// The backend closes every connection shortly after answering.
		var n atomic.Int64
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			n.Add(1)
			fmt.Fprint(w, "ok")
		}))
		s.Config.IdleTimeout = 50 * time.Millisecond
		s.Start()
		t.Cleanup(s.Close)
		pool := testPool(t, s.URL)
		addr := startProxy(t, New(Config{}), pool, ServerConfig{})
		for i := range 3 {
			if code, body, _ := do(t, addr, "POST", fmt.Sprint(i), "x"); code != 200 {
				t.Fatalf("POST %d over a stale connection: %d %q", i, code, body)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if n.Load() != 3 {
			t.Fatalf("backend got %d POSTs, want 3", n.Load())
		}
		assertIdle(t, pool)
	})
}

func TestRequestBodyLimit(t *testing.T) {
	cb, u := newCountingBackend(t, 200)
	pool := testPool(t, u)
	addr := startProxy(t, New(Config{MaxRequestBodyBytes: 1000}), pool, ServerConfig{})
	tests := []struct {
		name string
		raw  string
		want int
	}{
		{"Content-Length over the limit", "POST / HTTP/1.1\r\nHost: a\r\nX-Id: cl\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("x", 5000), 413},
		{"chunked body over the limit", "POST / HTTP/1.1\r\nHost: a\r\nX-Id: ch\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat("100\r\n"+strings.Repeat("y", 256)+"\r\n", 8) + "0\r\n\r\n", 413},
		{"Content-Length at the limit", "POST / HTTP/1.1\r\nHost: a\r\nX-Id: ok\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("z", 1000), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawExchange(t, addr, tt.raw)
			if resp == nil || resp.StatusCode != tt.want {
				t.Fatalf("got %v %q, want %d", resp, body, tt.want)
			}
		})
	}
	if cb.count("POST cl") != 0 {
		t.Error("a body over Content-Length limit reached the backend")
	}
	assertIdle(t, pool)
}

func TestHEADKeepsContentLength(t *testing.T) {
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "12345")
		if r.Method != http.MethodHead {
			_, _ = w.Write(make([]byte, 12345))
		}
	})
	pool := testPool(t, s.URL)
	addr := startProxy(t, New(Config{}), pool, ServerConfig{})
	resp, err := http.Head("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 12345 {
		t.Fatalf("HEAD: %d, Content-Length %d, want 200 with 12345", resp.StatusCode, resp.ContentLength)
	}
	assertIdle(t, pool)
}

func TestAccessLogAndMetrics(t *testing.T) {
	s := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") })
	var buf syncBuffer
	p := New(Config{AccessLog: slog.New(slog.NewJSONHandler(&buf, nil))})
	pool := testPool(t, s.URL)
	addr := startProxy(t, p, pool, ServerConfig{})
	code, _, _ := do(t, addr, "GET", "1", "")
	if code != 200 {
		t.Fatal(code)
	}
	assertIdle(t, pool)
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("access log %q: %v", buf.String(), err)
	}
	for _, k := range []string{"method", "path", "status", "upstream", "backend", "duration", "bytes", "request_id", "client", "tries"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access log line lacks %q: %v", k, line)
		}
	}
	if line["method"] != "GET" || line["path"] != "/x" || line["status"] != float64(200) || line["bytes"] != float64(5) ||
		line["client"] != "127.0.0.1" || line["tries"] != float64(1) || line["upstream"] != "app" {
		t.Errorf("access log line %v", line)
	}

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(p.Collector()); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, reg, "scaleout_requests_total", map[string]string{"upstream": "app", "code": "200"}); got != 1 {
		t.Errorf("scaleout_requests_total{upstream=app,code=200} = %v, want 1", got)
	}
	if got := histogramCount(t, reg, "scaleout_request_duration_seconds"); got != 1 {
		t.Errorf("scaleout_request_duration_seconds count = %d, want 1", got)
	}
}

// counterValue returns the value of the series of name with labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

func TestHTTPSBackend(t *testing.T) {
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v host=%s", r.TLS != nil, r.Host)
	}))
	t.Cleanup(s.Close)
	roots := x509.NewCertPool()
	roots.AddCert(s.Certificate())
	pool := testPool(t, s.URL)
	addr := startProxy(t, New(Config{TLSConfig: &tls.Config{RootCAs: roots}}), pool, ServerConfig{})
	for range 2 {
		code, body, _ := do(t, addr, "GET", "1", "")
		if code != 200 || !strings.HasPrefix(body, "tls=true host=127.0.0.1:") {
			t.Fatalf("got %d %q", code, body)
		}
	}
	assertIdle(t, pool)
}

func TestExpectContinue(t *testing.T) {
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "expect=%q body=%q", r.Header.Get("Expect"), b)
	})
	pool := testPool(t, s.URL)
	addr := startProxy(t, New(Config{}), pool, ServerConfig{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("got %q, %v; want 100 Continue before the body", line, err)
	}
	_, _ = br.ReadString('\n')
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if want := `expect="" body="hello"`; string(body) != want {
		t.Fatalf("backend saw %s, want %s", body, want)
	}
	assertIdle(t, pool)
}
