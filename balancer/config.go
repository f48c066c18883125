package balancer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Algorithm names accepted in Config.Algorithm.
const (
	AlgorithmRoundRobin         = "round-robin"
	AlgorithmWeightedRoundRobin = "weighted-round-robin"
	AlgorithmLeastConnections   = "least-connections"
	AlgorithmLeastResponseTime  = "least-response-time"
	AlgorithmIPHash             = "ip-hash"
)

// Algorithms returns the accepted algorithm names.
func Algorithms() []string {
	return []string{
		AlgorithmRoundRobin, AlgorithmWeightedRoundRobin, AlgorithmLeastConnections,
		AlgorithmLeastResponseTime, AlgorithmIPHash,
	}
}

// ErrUnknownAlgorithm is wrapped by the error New and Update return for an
// algorithm name they do not know.
var ErrUnknownAlgorithm = errors.New("unknown algorithm")

// Config configures a Pool. The zero value works: round-robin, no active
// health checks, passive checks on with their defaults, 30 s drain timeout.
type Config struct {
	// Algorithm is one of round-robin (the default), weighted-round-robin,
	// least-connections, least-response-time, ip-hash. Weights count for
	// weighted-round-robin and ip-hash only.
	Algorithm string
	// Health configures active checks. With an empty Path there are none.
	Health HealthConfig
	// Passive configures ejection from real traffic.
	Passive PassiveConfig
	// DrainTimeout bounds how long a removed backend waits for its
	// in-flight requests before it leaves. Default 30 s.
	DrainTimeout time.Duration
	// Logger receives state changes. Default slog.Default().
	Logger *slog.Logger
}

// HealthConfig configures active health checks of every backend of a pool.
type HealthConfig struct {
	// Path is requested on each backend; empty disables active checks.
	Path string
	// Method is the request method. Default GET.
	Method string
	// Interval between checks of one backend: the next check starts
	// Interval after the previous one ended. Default 5 s.
	Interval time.Duration
	// Timeout of one check. Default 2 s.
	Timeout time.Duration
	// StatusMin and StatusMax bound the expected status. Default 200–399.
	StatusMin, StatusMax int
	// UnhealthyAfter consecutive failures mark a backend unhealthy. Default 3.
	UnhealthyAfter int
	// HealthyAfter consecutive successes mark it healthy again. Default 2.
	HealthyAfter int
}

// PassiveConfig configures ejection of backends that fail real requests.
type PassiveConfig struct {
	// Disabled turns passive checks off.
	Disabled bool
	// Failures in a row (connect errors, timeouts, 5xx) eject a backend. Default 5.
	Failures int
	// EjectFor is the first ejection's length; each further ejection of the
	// same backend lasts one EjectFor longer, up to MaxEjectFor. Default 10 s.
	EjectFor time.Duration
	// MaxEjectFor caps the ejection time. Default 5 min.
	MaxEjectFor time.Duration
	// MaxEjectedPercent caps the share of the pool ejected by passive
	// checks at once: floor(MaxEjectedPercent × backends / 100), but at
	// least one backend when the pool has two or more (so 50 % of 2 is 1,
	// of 3 is 1, of 4 is 2). A lone backend is never ejected: that would
	// only turn its errors into 503s. Default 50.
	MaxEjectedPercent int
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Algorithm == "" {
		c.Algorithm = AlgorithmRoundRobin
	}
	if _, err := newPicker(c.Algorithm, nil); err != nil {
		return c, err
	}
	if c.DrainTimeout < 0 {
		return c, fmt.Errorf("drain timeout %v: must not be negative", c.DrainTimeout)
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	var err error
	if c.Health, err = c.Health.withDefaults(); err != nil {
		return c, fmt.Errorf("health: %w", err)
	}
	if c.Passive, err = c.Passive.withDefaults(); err != nil {
		return c, fmt.Errorf("passive: %w", err)
	}
	return c, nil
}

// enabled reports whether active checks run.
func (h HealthConfig) enabled() bool { return h.Path != "" }

func (h HealthConfig) withDefaults() (HealthConfig, error) {
	if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
		return h, fmt.Errorf("path %q: must start with /", h.Path)
	}
	if h.Method == "" {
		h.Method = http.MethodGet
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"interval", h.Interval}, {"timeout", h.Timeout}} {
		if d.v < 0 {
			return h, fmt.Errorf("%s %v: must not be negative", d.name, d.v)
		}
	}
	if h.Interval == 0 {
		h.Interval = 5 * time.Second
	}
	if h.Timeout == 0 {
		h.Timeout = 2 * time.Second
	}
	if h.StatusMin == 0 && h.StatusMax == 0 {
		h.StatusMin, h.StatusMax = 200, 399
	}
	if h.StatusMax == 0 {
		h.StatusMax = 599
	}
	if h.StatusMin < 100 || h.StatusMax > 599 || h.StatusMin > h.StatusMax {
		return h, fmt.Errorf("status range %d-%d: must lie within 100-599, min first", h.StatusMin, h.StatusMax)
	}
	if h.UnhealthyAfter < 0 || h.HealthyAfter < 0 {
		return h, fmt.Errorf("unhealthy after %d, healthy after %d: must not be negative", h.UnhealthyAfter, h.HealthyAfter)
	}
	if h.UnhealthyAfter == 0 {
		h.UnhealthyAfter = 3
	}
	if h.HealthyAfter == 0 {
		h.HealthyAfter = 2
	}
	return h, nil
}

func (p PassiveConfig) withDefaults() (PassiveConfig, error) {
	if p.Failures < 0 || p.EjectFor < 0 || p.MaxEjectFor < 0 {
		return p, fmt.Errorf("failures %d, eject for %v, max eject for %v: must not be negative", p.Failures, p.EjectFor, p.MaxEjectFor)
	}
	if p.MaxEjectedPercent < 0 || p.MaxEjectedPercent > 100 {
		return p, fmt.Errorf("max ejected percent %d: must be within 0-100", p.MaxEjectedPercent)
	}
	if p.Failures == 0 {
		p.Failures = 5
	}
	if p.EjectFor == 0 {
		p.EjectFor = 10 * time.Second
	}
	if p.MaxEjectFor == 0 {
		p.MaxEjectFor = 5 * time.Minute
	}
	p.MaxEjectFor = max(p.MaxEjectFor, p.EjectFor)
	if p.MaxEjectedPercent == 0 {
		p.MaxEjectedPercent = 50
	}
	return p, nil
}
