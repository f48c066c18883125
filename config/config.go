package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Config is the whole gateway configuration.
type Config struct {
	// Listen is the data-plane address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// TLS serves the data plane over TLS when both files are set.
	TLS TLS `yaml:"tls"`
	// Admin is the admin API listener.
	Admin Admin `yaml:"admin"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Server holds the client-facing limits and timeouts.
	Server Server `yaml:"server"`
	// Upstreams are the named pools of app instances.
	Upstreams map[string]*Upstream `yaml:"upstreams"`
	// Routes map requests to upstreams; the first match wins, and a
	// longer path prefix is tried before a shorter one.
	Routes []Route `yaml:"routes"`
	// Cache configures the layers of the HTTP cache that routes with
	// cache.enabled use.
	Cache CacheLayers `yaml:"cache"`
	// Realtime configures the WebSocket hub that routes with a realtime
	// path serve.
	Realtime Realtime `yaml:"realtime"`

	// Path is the file the configuration was read from, if any.
	Path string `yaml:"-"`
}

// TLS names a certificate and key in PEM files.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Admin configures the admin listener (API, metrics, dashboard).
type Admin struct {
	// Listen defaults to 127.0.0.1:9901. A non-loopback address needs a Token.
	Listen string `yaml:"listen"`
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// every mutating call. By default there is none.
	Token string `yaml:"token"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is text (default) or json.
	Format string `yaml:"format"`
	// Access turns on one access-log line per request. Default off.
	Access bool `yaml:"access"`
}

// Server holds client-facing limits.
type Server struct {
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers. Default 10s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle client keep-alive connections. Default 60s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds the request header block (431 beyond); it is
	// also each client connection's read buffer. Default 16KiB.
	MaxHeaderBytes ByteSize `yaml:"max_header_bytes"`
	// MaxBodyBytes bounds a request body (413 beyond). Default 10MiB.
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
	// BodyReadTimeout bounds reading a request body (408 beyond). Default 60s.
	BodyReadTimeout Duration `yaml:"body_read_timeout"`
	// TrustedProxies are CIDRs (or addresses) whose X-Forwarded-For is
	// believed. By default none is.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// GracePeriod bounds how long shutdown waits for in-flight requests. Default 30s.
	GracePeriod Duration `yaml:"grace_period"`
}

// Upstream is one pool of app instances.
type Upstream struct {
	// Algorithm is round-robin (default), weighted-round-robin,
	// least-connections, least-response-time or ip-hash.
	Algorithm string `yaml:"algorithm"`
	// Backends are the instances.
	Backends []Backend `yaml:"backends"`
	// Health configures active health checks. Without a path there are none.
	Health Health `yaml:"health"`
	// Passive configures ejection from real traffic.
	Passive Passive `yaml:"passive"`
	// Retries bounds retries to other backends.
	Retries Retries `yaml:"retries"`
	// Timeouts towards the backends.
	Timeouts Timeouts `yaml:"timeouts"`
	// MaxConnsPerBackend bounds the keep-alive pool to each backend. Default 512.
	MaxConnsPerBackend int `yaml:"max_conns_per_backend"`
	// DrainTimeout bounds how long a removed backend may finish its
	// in-flight requests. Default 30s.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// Autoscale grows and shrinks the upstream's instances with its load.
	// Off by default.
	Autoscale *Autoscale `yaml:"autoscale"`
	// RequestHeaders are set on every request sent to this upstream,
	// replacing what the client sent under those names (like nginx's
	// proxy_set_header). Default: none.
	RequestHeaders map[string]string `yaml:"request_headers"`
}

// Backend is one app instance.
type Backend struct {
	// URL is http://host:port or https://host:port.
	URL string `yaml:"url"`
	// Weight is the relative share for weighted algorithms. Default 1.
	Weight int `yaml:"weight"`
}

// Health configures active health checks.
type Health struct {
	Path   string `yaml:"path"`
	Method string `yaml:"method"`
	// Interval between checks. Default 5s.
	Interval Duration `yaml:"interval"`
	// Timeout of one check. Default 2s (never above the interval).
	Timeout Duration `yaml:"timeout"`
	// ExpectStatus is a range such as "200-399" (the default) or one code.
	ExpectStatus string `yaml:"expect_status"`
	// UnhealthyAfter consecutive failures. Default 3.
	UnhealthyAfter int `yaml:"unhealthy_after"`
	// HealthyAfter consecutive successes. Default 2.
	HealthyAfter int `yaml:"healthy_after"`
}

// Passive configures ejection of backends that fail real traffic.
type Passive struct {
	// Enabled defaults to true.
	Enabled *bool `yaml:"enabled"`
	// Failures in a row that eject a backend. Default 5.
	Failures int `yaml:"failures"`
	// EjectFor is the first ejection's length. Default 10s.
	EjectFor Duration `yaml:"eject_for"`
	// MaxEjectFor caps repeated ejections. Default 5m.
	MaxEjectFor Duration `yaml:"max_eject_for"`
	// MaxEjectedPercent of the pool at once. Default 50.
	MaxEjectedPercent int `yaml:"max_ejected_percent"`
}

// Retries bounds retries.
type Retries struct {
	// Max extra tries per request. Default 2; 0 is taken as the default,
	// write -1 to disable retries.
	Max int `yaml:"max"`
	// BudgetPercent caps retries as a share of requests. Default 20.
	BudgetPercent int `yaml:"budget_percent"`
}

// Timeouts towards backends.
type Timeouts struct {
	// Dial default 2s.
	Dial Duration `yaml:"dial"`
	// ResponseHeader default 30s.
	ResponseHeader Duration `yaml:"response_header"`
	// Idle keep-alive connections to backends are closed after this. Default 90s.
	Idle Duration `yaml:"idle"`
}

// Route sends matching requests to an upstream.
type Route struct {
	// Name labels the route in metrics and the admin API. Default: the
	// host and path prefix, e.g. "example.com/api" or "/".
	Name string `yaml:"name"`
	// Host matches the request's Host (without port), exactly or as
	// "*.example.com". Empty matches every host.
	Host string `yaml:"host"`
	// PathPrefix matches the request path. Default "/".
	PathPrefix string `yaml:"path_prefix"`
	// Upstream names the pool.
	Upstream string `yaml:"upstream"`
	// CDN rewrites asset URLs in this route's HTML and CSS to a CDN host and
	// serves the assets with CDN-friendly headers. Off by default.
	CDN *CDN `yaml:"cdn"`
	// Cache turns on shared HTTP caching for this route. Off by default.
	Cache *RouteCache `yaml:"cache"`
	// Realtime serves the gateway's WebSocket hub at Path (a request path
	// within this route); other paths of the route are proxied as usual.
	Realtime *RouteRealtime `yaml:"realtime"`
}

// RouteRealtime mounts the WebSocket hub on a route.
type RouteRealtime struct {
	// Path is the WebSocket endpoint, e.g. /ws. Required.
	Path string `yaml:"path"`
}

// Realtime configures the WebSocket hub shared by every realtime route.
type Realtime struct {
	// Broker carries messages between gateway nodes: memory (default; one
	// node), redis or nats.
	Broker string `yaml:"broker"`
	// RedisURL is used by the redis broker, for presence across nodes, and
	// for the nats broker's history. Default: none.
	RedisURL string `yaml:"redis_url"`
	// NATSURL is the nats broker's server. Default nats://127.0.0.1:4222.
	NATSURL string `yaml:"nats_url"`
	// Secret is the HMAC key the app signs connection tokens with.
	// Default: none, and then only anonymous connections (if allowed).
	Secret string `yaml:"secret"`
	// AllowAnonymous lets connections without a token subscribe to
	// AnonymousChannels. Default false.
	AllowAnonymous    bool     `yaml:"allow_anonymous"`
	AnonymousChannels []string `yaml:"anonymous_channels"`
	// HistorySize messages are kept per channel for recovery. Default 100.
	HistorySize int `yaml:"history_size"`
	// HistoryTTL after a channel's last message. Default 5m.
	HistoryTTL Duration `yaml:"history_ttl"`
	// SendQueue frames per connection before a slow client is cut. Default 256.
	SendQueue int `yaml:"send_queue"`
	// PingInterval and PongTimeout detect dead connections. Default 25s, 10s.
	PingInterval Duration `yaml:"ping_interval"`
	PongTimeout  Duration `yaml:"pong_timeout"`
	// PresenceTTL bounds how long a crashed node's users stay present. Default 15s.
	PresenceTTL Duration `yaml:"presence_ttl"`
}

// CacheLayers are the storage layers of the gateway's HTTP cache.
type CacheLayers struct {
	Memory struct {
		// MaxBytes bounds the in-process layer. Default 64MiB.
		MaxBytes ByteSize `yaml:"max_bytes"`
	} `yaml:"memory"`
	Redis struct {
		// URL of the shared layer, e.g. redis://127.0.0.1:6379/0. Default:
		// none, memory only (no sharing or purging across nodes).
		URL string `yaml:"url"`
		// Prefix of the keys; gateways with the same Redis and prefix share
		// entries and purges. Default "scaleout:http:".
		Prefix string `yaml:"prefix"`
	} `yaml:"redis"`
}

// RouteCache is a route's HTTP caching.
type RouteCache struct {
	// Enabled turns caching on.
	Enabled bool `yaml:"enabled"`
	// MaxObjectBytes bounds a stored response; larger ones stream through
	// uncached. Default 1MiB.
	MaxObjectBytes ByteSize `yaml:"max_object_bytes"`
	// DefaultTTL is the freshness of cacheable responses that carry none.
	// Default 0: they are not stored (no heuristic freshness).
	DefaultTTL Duration `yaml:"default_ttl"`
	// StoreSetCookie stores responses that carry Set-Cookie, without the
	// cookie. Default false: they are not stored.
	StoreSetCookie bool `yaml:"store_set_cookie"`
}

// CDN configures asset offloading on a route.
type CDN struct {
	// Host is the CDN's base URL, e.g. https://cdn.example.com. Required.
	Host string `yaml:"host"`
	// Origins are the absolute origins (scheme://host[:port]) whose asset
	// URLs are rewritten too; the page's own origin always is.
	Origins []string `yaml:"origins"`
	// Patterns select asset paths: "*.css" globs and "/static/" prefixes.
	// Default: images, CSS, JS, fonts, video and /static/.
	Patterns []string `yaml:"patterns"`
	// Fingerprint appends a content version to rewritten URLs so that they
	// can be cached as immutable. Default false.
	Fingerprint bool `yaml:"fingerprint"`
	// CacheControl for assets served as the CDN's origin. Default
	// "public, max-age=86400" ("…, immutable" a year for fingerprinted URLs).
	CacheControl string `yaml:"cache_control"`
	// PullHeader names a request header that marks a request as coming from
	// the CDN (e.g. CDN-Loop). Default: none.
	PullHeader string `yaml:"pull_header"`
	// PullSources are the CIDRs the CDN pulls from. Default: none.
	PullSources []string `yaml:"pull_sources"`
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// Error is a problem at one place of the file.
type Error struct {
	// Line is 1-based; 0 when the field is absent from the file.
	Line int
	// Field is the dotted path of the field, e.g. upstreams.app.algorithm.
	Field string
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Msg)
}

// Parse decodes and validates a YAML document. Unknown keys are errors.
func Parse(data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("parsing yaml: %w", err)
	}
	if len(root.Content) == 0 {
		return nil, errors.New("config is empty")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	c := &Config{}
	v := &validator{root: root.Content[0]}
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, v.typeErrors(te)
		}
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	v.checkNodes(v.root, "")
	c.applyDefaults()
	c.validate(v)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return c, nil
}

type validator struct {
	root *yaml.Node
	errs []error
}

// line finds the line of a dotted path ("upstreams.app.backends.1.url");
// when the path is absent it falls back to the nearest present parent.
func (v *validator) line(path string) int {
	n := v.root
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == part {
					next = n.Content[i+1]
					line = n.Content[i].Line
					break
				}
			}
		case yaml.SequenceNode:
			var idx int
			if _, err := fmt.Sscanf(part, "%d", &idx); err == nil && idx >= 0 && idx < len(n.Content) {
				next = n.Content[idx]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

func (v *validator) errf(path, format string, args ...any) {
	v.errs = append(v.errs, &Error{Line: v.line(path), Field: path, Msg: fmt.Sprintf(format, args...)})
}

// Names returns the upstream names in sorted order.
func (c *Config) Names() []string {
	names := make([]string, 0, len(c.Upstreams))
	for n := range c.Upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TrustedPrefixes returns Server.TrustedProxies parsed; Parse has
// validated them already.
func (c *Config) TrustedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range c.Server.TrustedProxies {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// IsLoopback reports whether a listen address binds only loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// Autoscale is an upstream's autoscaler: target tracking of one metric,
// with instances run by a provider.
type Autoscale struct {
	// Min instances. Default 1.
	Min int `yaml:"min"`
	// Max instances. Default 10.
	Max int `yaml:"max"`
	// Metric is inflight (default: requests in flight per instance), rps
	// (per instance), latency_p95 (seconds) or cpu (percent of a core per
	// instance).
	Metric string `yaml:"metric"`
	// Target value of the metric per instance. Default 10 in flight, 100
	// rps, 0.2 s, 70 %.
	Target float64 `yaml:"target"`
	// Tolerance is the band around the target where nothing changes.
	// Default 0.1.
	Tolerance float64 `yaml:"tolerance"`
	// Interval between decisions. Default 15s.
	Interval Duration `yaml:"interval"`
	// ScaleUp bounds growth: at most +Percent % or +Instances per Period.
	ScaleUp struct {
		Percent   int      `yaml:"percent"`   // default 100
		Instances int      `yaml:"instances"` // default 4
		Period    Duration `yaml:"period"`    // default 15s
		Window    Duration `yaml:"window"`    // default 0: scale out on the first high reading
	} `yaml:"scale_up"`
	// ScaleDownWindow: the highest recommendation in it wins. Default 5m.
	ScaleDownWindow Duration `yaml:"scale_down_window"`
	// Provider runs the instances: process (the default) or kubernetes.
	Provider string `yaml:"provider"`
	// Kubernetes configures the kubernetes provider: the Deployment it
	// scales and the Service whose EndpointSlices list its ready pods.
	Kubernetes struct {
		Namespace  string `yaml:"namespace"`  // default "default"
		Deployment string `yaml:"deployment"` // required
		Service    string `yaml:"service"`    // default the Deployment's name
		Port       string `yaml:"port"`       // port name or number; default the only one
		Scheme     string `yaml:"scheme"`     // http (default) or https
		// Kubeconfig is a kubeconfig file; by default the in-cluster
		// service account is used.
		Kubeconfig string `yaml:"kubeconfig"`
	} `yaml:"kubernetes"`
	// Command runs one instance (process provider); it gets PORT and
	// INSTANCE_ID in its environment. Give the program itself, not "go run".
	Command []string `yaml:"command"`
	// Env is added to the instances' environment.
	Env map[string]string `yaml:"env"`
	// HealthPath must answer 2xx/3xx before an instance joins. Default /health.
	HealthPath string `yaml:"health_path"`
	// StopGrace is the time between SIGTERM and SIGKILL. Default 10s.
	StopGrace Duration `yaml:"stop_grace"`
}
