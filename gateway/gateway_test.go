package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scaleout/scaleout/config"
)

// testBackend is an httptest server that names itself and counts requests.
type testBackend struct {
	*httptest.Server
	name string
	hits atomic.Int64
}

func newTestBackend(t *testing.T, name string) *testBackend {
	t.Helper()
	b := &testBackend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			fmt.Fprint(w, "ok")
			return
		}
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			time.Sleep(d)
		}
		b.hits.Add(1)
		w.Header().Set("X-Backend", name)
		fmt.Fprint(w, name)
	}))
	t.Cleanup(b.Close)
	return b
}

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return c
}

// runGateway starts g and returns its data and admin base URLs; it stops
// when the test ends.
func runGateway(t *testing.T, c *config.Config) (*Gateway, string, string) {
	t.Helper()
	g, err := New(c, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run returned %v", err)
		}
	})
	d, a := g.Addrs()
	return g, "http://" + d.String(), "http://" + a.String()
}

func oneUpstream(algorithm string, extra string, bs ...*testBackend) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n%supstreams:\n  app:\n    algorithm: %s\n    backends:\n", extra, algorithm)
	for _, be := range bs {
		fmt.Fprintf(&b, "      - url: %s\n", be.URL)
	}
	b.WriteString("    health:\n      path: /health\n      interval: 100ms\nroutes:\n  - path_prefix: /\n    upstream: app\n")
	return b.String()
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

func TestRouting(t *testing.T) {
	web, api, admin := newTestBackend(t, "web"), newTestBackend(t, "api"), newTestBackend(t, "admin-host")
	c := parse(t, fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
upstreams:
  web: {backends: [{url: %s}]}
  api: {backends: [{url: %s}]}
  adm: {backends: [{url: %s}]}
routes:
  - {path_prefix: /, upstream: web}
  - {path_prefix: /api, upstream: api}
  - {host: admin.example.test, path_prefix: /, upstream: adm}
  - {host: "*.api.test", path_prefix: /v1/, upstream: api}
`, web.URL, api.URL, admin.URL))
	_, base, _ := runGateway(t, c)
	tests := []struct {
		host, path, want string
	}{
		{"", "/", "web"},
		{"", "/index.html", "web"},
		{"", "/api", "api"},
		{"", "/api/users", "api"},
		{"", "/apix", "web"}, // prefixes match whole segments
		{"admin.example.test", "/api/users", "admin-host"},
		{"ADMIN.example.test:8080", "/", "admin-host"},
		{"x.api.test", "/v1/things", "api"},
		{"x.api.test", "/v2/things", "web"},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest("GET", base+tt.path, nil)
			if tt.host != "" {
				req.Host = tt.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != tt.want {
				t.Errorf("host %q path %q went to %q, want %q", tt.host, tt.path, body, tt.want)
			}
		})
	}
}

func TestNoRouteIs404(t *testing.T) {
	b := newTestBackend(t, "a")
	c := parse(t, fmt.Sprintf("listen: 127.0.0.1:0\nadmin: {listen: \"127.0.0.1:0\"}\nupstreams:\n  a: {backends: [{url: %s}]}\nroutes:\n  - {path_prefix: /only, upstream: a}\n", b.URL))
	_, base, _ := runGateway(t, c)
	if code, _, _ := get(t, base+"/elsewhere"); code != 404 {
		t.Errorf("unrouted path gave %d, want 404", code)
	}
}

func adminDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminAPI(t *testing.T) {
	a, b := newTestBackend(t, "a"), newTestBackend(t, "b")
	c := parse(t, oneUpstream("round-robin", "", a))
	c.Admin.Token = "s3cret"
	_, base, admin := runGateway(t, c)
	bID := strings.TrimPrefix(b.URL, "http://")
	aID := strings.TrimPrefix(a.URL, "http://")

	// Reads need no token; mutations do.
	code, body := adminDo(t, "GET", admin+"/api/upstreams", "", "")
	var st struct {
		Upstreams []struct {
			Name     string `json:"name"`
			Backends []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"backends"`
		} `json:"upstreams"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || len(st.Upstreams) != 1 || st.Upstreams[0].Name != "app" || len(st.Upstreams[0].Backends) != 1 {
		t.Fatalf("GET /api/upstreams = %d %s", code, body)
	}
	tests := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"add without token", "POST", "/api/upstreams/app/backends", "", `{"url":"` + b.URL + `"}`, 401},
		{"add with wrong token", "POST", "/api/upstreams/app/backends", "nope", `{"url":"` + b.URL + `"}`, 401},
		{"add bad json", "POST", "/api/upstreams/app/backends", "s3cret", `{"url":`, 400},
		{"add bad url", "POST", "/api/upstreams/app/backends", "s3cret", `{"url":"ftp://x"}`, 400},
		{"add unknown field", "POST", "/api/upstreams/app/backends", "s3cret", `{"url":"` + b.URL + `","wieght":2}`, 400},
		{"add to unknown upstream", "POST", "/api/upstreams/nope/backends", "s3cret", `{"url":"` + b.URL + `"}`, 404},
		{"add", "POST", "/api/upstreams/app/backends", "s3cret", `{"url":"` + b.URL + `"}`, 201},
		{"add again", "POST", "/api/upstreams/app/backends", "s3cret", `{"url":"` + b.URL + `"}`, 409},
		{"drain unknown", "POST", "/api/upstreams/app/backends/127.0.0.1:1/drain", "s3cret", "", 404},
		{"delete without token", "DELETE", "/api/upstreams/app/backends/" + bID, "", "", 401},
	}
	for _, tt := range tests {
		code, body := adminDo(t, tt.method, admin+tt.path, tt.token, tt.body)
		if code != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, code, body, tt.want)
		}
	}

	// The added backend takes traffic.
	a.hits.Store(0)
	for range 10 {
		get(t, base+"/")
	}
	if b.hits.Load() != 5 || a.hits.Load() != 5 {
		t.Errorf("after add: a=%d b=%d, want 5 each", a.hits.Load(), b.hits.Load())
	}
	// Drained: no new requests.
	if code, body := adminDo(t, "POST", admin+"/api/upstreams/app/backends/"+aID+"/drain", "s3cret", ""); code != 202 {
		t.Fatalf("drain = %d %s", code, body)
	}
	a.hits.Store(0)
	for range 10 {
		get(t, base+"/")
	}
	if a.hits.Load() != 0 {
		t.Errorf("drained backend got %d requests", a.hits.Load())
	}
	// Deleted: gone from the list once idle.
	if code, body := adminDo(t, "DELETE", admin+"/api/upstreams/app/backends/"+bID, "s3cret", ""); code != 202 {
		t.Fatalf("delete = %d %s", code, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := adminDo(t, "GET", admin+"/api/upstreams/app", "", "")
		if !strings.Contains(body, bID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("removed backend still listed: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body, _ := get(t, admin+"/metrics"); code != 200 || !strings.Contains(body, "scaleout_") {
		t.Errorf("/metrics = %d without scaleout_ metrics", code)
	}
	if code, _ := adminDo(t, "GET", admin+"/healthz", "", ""); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
}

func TestNoHealthyBackendIs503(t *testing.T) {
	a := newTestBackend(t, "a")
	c := parse(t, oneUpstream("round-robin", "", a))
	_, base, _ := runGateway(t, c)
	a.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body, h := get(t, base+"/")
		if code == 503 {
			if !strings.Contains(body, "app") || h.Get("Retry-After") == "" {
				t.Errorf("503 body %q Retry-After %q: want the upstream named and a Retry-After", body, h.Get("Retry-After"))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d with the only backend gone", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReloadUnderLoad swaps the backend set repeatedly while clients send
// requests: none may fail, and a backend that stays keeps its counters.
func TestReloadUnderLoad(t *testing.T) {
	a, b, c := newTestBackend(t, "a"), newTestBackend(t, "b"), newTestBackend(t, "c")
	cfgAB := oneUpstream("round-robin", "", a, b)
	cfgAC := oneUpstream("least-connections", "", a, c)
	g, base, _ := runGateway(t, parse(t, cfgAB))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	client := &http.Client{Timeout: 5 * time.Second}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000 && ctx.Err() == nil; i++ {
				resp, err := client.Get(base + "/x")
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	aBefore := g.upstream("app").pool.Backend(strings.TrimPrefix(a.URL, "http://"))
	for i := 0; i < 20 && ctx.Err() == nil; i++ {
		src := cfgAB
		if i%2 == 0 {
			src = cfgAC
		}
		if err := g.Reload(parse(t, src)); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during reloads", failed.Load(), failed.Load()+ok.Load())
	}
	if ok.Load() == 0 {
		t.Fatal("no request succeeded")
	}
	aAfter := g.upstream("app").pool.Backend(strings.TrimPrefix(a.URL, "http://"))
	if aBefore == nil || aAfter != aBefore {
		t.Errorf("backend a was replaced by reload; it should keep its state")
	}
}

func TestReloadRejectsBadConfigAndKeepsRunning(t *testing.T) {
	a := newTestBackend(t, "a")
	g, base, _ := runGateway(t, parse(t, oneUpstream("round-robin", "", a)))
	bad := parse(t, oneUpstream("round-robin", "", a))
	bad.Upstreams["app"].Algorithm = "random" // bypasses config validation on purpose
	if err := g.Reload(bad); err == nil {
		t.Fatal("reload accepted an unknown algorithm")
	}
	if code, body, _ := get(t, base+"/"); code != 200 || body != "a" {
		t.Errorf("after a failed reload: %d %q", code, body)
	}
}

// TestGracefulShutdown: a request in flight when the gateway is told to
// stop still gets its answer, and Run returns nil.
func TestGracefulShutdown(t *testing.T) {
	a := newTestBackend(t, "a")
	g, err := New(parse(t, oneUpstream("round-robin", "", a)), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	<-g.Ready()
	d, _ := g.Addrs()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + d.String() + "/slow?sleep=500ms")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- fmt.Sprint(resp.StatusCode, " ", string(b))
	}()
	time.Sleep(150 * time.Millisecond)
	cancel()
	if r := <-got; r != "200 a" {
		t.Errorf("in-flight request during shutdown: %s", r)
	}
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestKubernetesProviderNeedsAClient(t *testing.T) {
	a := newTestBackend(t, "a")
	src := strings.Replace(oneUpstream("round-robin", "", a), "    health:", "    autoscale:\n      provider: kubernetes\n      kubernetes: {deployment: web, kubeconfig: /nonexistent/kubeconfig}\n    health:", 1)
	_, err := New(parse(t, src), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "kubernetes client") {
		t.Errorf("New with an unreadable kubeconfig: %v", err)
	}
}
