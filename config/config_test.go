package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// minimal is the configuration issue #2 requires to work exactly as written.
const minimal = `listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:9901
upstreams:
  app:
    algorithm: round-robin
    backends:
      - url: http://127.0.0.1:9001
      - url: http://127.0.0.1:9002
        weight: 2
    health:
      path: /health
      interval: 1s
routes:
  - path_prefix: /
    upstream: app
`

func TestMinimalConfig(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Upstreams["app"]
	if u == nil || len(u.Backends) != 2 || u.Backends[0].Weight != 1 || u.Backends[1].Weight != 2 {
		t.Fatalf("backends = %+v", u)
	}
	if u.Health.Interval.Std() != time.Second || u.Health.Timeout.Std() != time.Second {
		t.Errorf("health interval/timeout = %v/%v, want 1s/1s (timeout capped at interval)", u.Health.Interval.Std(), u.Health.Timeout.Std())
	}
	if lo, hi, _ := u.Health.StatusRange(); lo != 200 || hi != 399 {
		t.Errorf("status range %d-%d", lo, hi)
	}
	if u.Health.UnhealthyAfter != 3 || u.Health.HealthyAfter != 2 || u.Passive.MaxEjectedPercent != 50 || !*u.Passive.Enabled {
		t.Errorf("defaults not applied: %+v %+v", u.Health, u.Passive)
	}
	if u.DrainTimeout.Std() != 30*time.Second || u.Retries.Max != 2 {
		t.Errorf("drain %v retries %d", u.DrainTimeout.Std(), u.Retries.Max)
	}
	if c.Routes[0].PathPrefix != "/" || c.Routes[0].Upstream != "app" {
		t.Errorf("routes %+v", c.Routes)
	}
}

func TestBadConfigNamesFieldAndLine(t *testing.T) {
	tests := []struct {
		name   string
		old    string
		new    string
		want   []string // substrings of the error
		wantLn string
	}{
		{"misspelt algorithm", "algorithm: round-robin", "algorithm: round-robbin", []string{"upstreams.app.algorithm", `"round-robbin"`}, "line 6"},
		{"unknown key", "    health:", "    healht:", []string{"healht"}, "line 11"},
		{"bad duration", "interval: 1s", "interval: fast", []string{`"fast" is not a duration`}, "line 13"},
		{"bare number duration", "interval: 1s", "interval: 5", []string{"not a duration"}, "line 13"},
		{"route to missing upstream", "    upstream: app\n", "    upstream: web\n", []string{"routes.0.upstream", `"web"`}, "line 16"},
		{"bad backend url", "http://127.0.0.1:9001", "127.0.0.1:9001", []string{"upstreams.app.backends.0.url"}, "line 8"},
		{"backend with path", "http://127.0.0.1:9001", "http://127.0.0.1:9001/app", []string{"remove the path"}, "line 8"},
		{"duplicate backend", "http://127.0.0.1:9002", "http://127.0.0.1:9001", []string{"duplicates backend 0"}, "line 9"},
		{"negative weight", "weight: 2", "weight: -2", []string{"upstreams.app.backends.1.weight"}, "line 10"},
		{"public admin without token", "listen: 127.0.0.1:9901", "listen: 0.0.0.0:9901", []string{"admin.token", "not loopback"}, "line 3"},
		{"bad listen", "listen: 127.0.0.1:8080", "listen: 8080", []string{"listen", "not host:port"}, "line 1"},
		{"health path", "path: /health", "path: health", []string{"health.path"}, "line 12"},
		{"type error", "weight: 2", "weight: heavy", []string{"heavy"}, "line 10"},
		{"prefix without slash", "path_prefix: /", "path_prefix: api", []string{"routes.0.path_prefix"}, "line 15"},
		{"unknown key names the path", "    health:", "    healht:", []string{"upstreams.app.healht", "unknown field"}, "line 11"},
		{"type error names the field", "weight: 2", "weight: two", []string{"upstreams.app.backends.1.weight", "whole number", `"two"`}, "line 10"},
		{"fractional weight", "weight: 2", "weight: 2.5", []string{"upstreams.app.backends.1.weight", "whole number"}, "line 10"},
		{"zero weight", "weight: 2", "weight: 0", []string{"upstreams.app.backends.1.weight", "out of range"}, "line 10"},
		{"list where a mapping is wanted", "    health:\n      path: /health\n      interval: 1s\n", "    health: [a]\n", []string{"upstreams.app.health", "mapping"}, "line 11"},
		{"timeout over interval", "interval: 1s", "interval: 1s\n      timeout: 5s", []string{"upstreams.app.health.timeout", "longer than the interval"}, "line 14"},
		{"admin on the data port", "listen: 127.0.0.1:9901", "listen: 127.0.0.1:8080", []string{"admin.listen", "also the data-plane"}, "line 3"},
		{"missing tls files", "listen: 127.0.0.1:8080\n", "listen: 127.0.0.1:8080\ntls: {cert: /nonexistent/c.pem, key: /nonexistent/k.pem}\n", []string{"tls.cert", "cannot read"}, "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(minimal, tt.old, tt.new, 1)
			if src == minimal {
				t.Fatalf("replacement %q not applied", tt.old)
			}
			_, err := Parse([]byte(src))
			if err == nil {
				t.Fatal("bad config accepted")
			}
			msg := err.Error()
			for _, w := range append(tt.want, tt.wantLn) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestEmptyAndMissing(t *testing.T) {
	for _, src := range []string{"", "listen: 127.0.0.1:1\n", "upstreams: {}\nroutes: []\n"} {
		if _, err := Parse([]byte(src)); err == nil {
			t.Errorf("%q accepted", src)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"512": 512, "64KiB": 64 << 10, "10MB": 10_000_000, "64MiB": 64 << 20, "1G": 1 << 30} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "MiB", "1.5MiB", "99999999999GiB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("upstreams: {a: {backends: [{url: 'http://x:1'}]}}\nroutes: [{upstream: a}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil && (len(c.Upstreams) == 0 || len(c.Routes) == 0) {
			t.Fatalf("accepted a config without upstreams or routes")
		}
	})
}

func TestRealtimeValidation(t *testing.T) {
	base := minimal + "realtime:\n  secret: s\n"
	withRoute := strings.Replace(base, "    upstream: app\n", "    upstream: app\n    realtime: {path: /ws}\n", 1)
	if _, err := Parse([]byte(withRoute)); err != nil {
		t.Fatalf("valid realtime config rejected: %v", err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"unknown broker", "realtime:\n", "realtime:\n  broker: kafka\n", "realtime.broker"},
		{"redis broker without url", "realtime:\n", "realtime:\n  broker: redis\n", "realtime.redis_url"},
		{"nats without history", "realtime:\n", "realtime:\n  broker: nats\n", "needs redis_url"},
		{"negative queue", "realtime:\n", "realtime:\n  send_queue: -1\n", "realtime.send_queue"},
		{"bad anonymous channel", "realtime:\n", "realtime:\n  anonymous_channels: [\"$x\"]\n", "anonymous_channels.0"},
		{"nobody can connect", "  secret: s\n", "  history_size: 10\n", "no connection could ever be accepted"},
		{"path without slash", "realtime: {path: /ws}", "realtime: {path: ws}", "routes.0.realtime.path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(withRoute, tt.old, tt.new, 1)
			_, err := Parse([]byte(src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestAutoscaleProviders(t *testing.T) {
	block := func(provider string) string {
		return strings.Replace(minimal, "    health:", "    autoscale:\n"+provider+"    health:", 1)
	}
	tests := []struct {
		name, block, want string
	}{
		{"process needs a command", "      min: 1\n", "autoscale.command"},
		{"kubernetes needs a deployment", "      provider: kubernetes\n", "kubernetes.deployment"},
		{"unknown provider", "      provider: nomad\n", "unknown provider"},
		{"bad metric", "      command: [x]\n      metric: memory\n", "autoscale.metric"},
		{"min over max", "      command: [x]\n      min: 5\n      max: 2\n", "autoscale.min"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(block(tt.block)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
	for _, ok := range []string{"      command: [/bin/app]\n", "      provider: kubernetes\n      kubernetes: {deployment: web, port: http}\n"} {
		if _, err := Parse([]byte(block(ok))); err != nil {
			t.Errorf("valid autoscale block rejected: %v\n%s", err, ok)
		}
	}
}
