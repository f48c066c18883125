package benchkit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"time"
)

// WrkResult is the JSON line bench/lb/report.lua prints at the end of a
// wrk run (latencies in microseconds).
type WrkResult struct {
	Requests      int64   `json:"requests"`
	DurationUS    int64   `json:"duration_us"`
	Bytes         int64   `json:"bytes"`
	ErrConnect    int64   `json:"errors_connect"`
	ErrRead       int64   `json:"errors_read"`
	ErrWrite      int64   `json:"errors_write"`
	ErrStatus     int64   `json:"errors_status"`
	ErrTimeout    int64   `json:"errors_timeout"`
	MeanUS        float64 `json:"mean_us"`
	P50US         int64   `json:"p50_us"`
	P99US         int64   `json:"p99_us"`
	P999US        int64   `json:"p999_us"`
	MaxUS         int64   `json:"max_us"`
	RPS           float64 `json:"-"`
	Errors        int64   `json:"-"`
	CPUSeconds    float64 `json:"-"`
	OriginFetches int64   `json:"-"`
}

// WrkLoad is one fixed wrk load: the same for every contender.
type WrkLoad struct {
	Lua      string // bench/lb/report.lua
	CPUs     string // taskset CPU list for wrk; empty: none
	Threads  int
	Conns    int
	Duration time.Duration
}

// Run loads url for the configured duration (bounded by a timeout of twice
// that plus 10 s) and returns wrk's totals.
func (w WrkLoad) Run(ctx context.Context, url string, d time.Duration) (WrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*d+10*time.Second)
	defer cancel()
	argv := []string{"wrk", "-t" + strconv.Itoa(w.Threads), "-c" + strconv.Itoa(w.Conns),
		"-d" + strconv.Itoa(int(d.Seconds())) + "s", "--timeout", "5s", "-s", w.Lua, url}
	if w.CPUs != "" {
		argv = append([]string{"taskset", "-c", w.CPUs}, argv...)
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: %w: %s", url, err, out)
	}
	i := bytes.Index(out, []byte("WRKJSON "))
	if i < 0 {
		return WrkResult{}, fmt.Errorf("wrk %s: no WRKJSON line in: %s", url, out)
	}
	line := out[i+len("WRKJSON "):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	var r WrkResult
	if err := json.Unmarshal(line, &r); err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: parsing %q: %w", url, line, err)
	}
	if r.DurationUS > 0 {
		r.RPS = float64(r.Requests) / (float64(r.DurationUS) / 1e6)
	}
	r.Errors = r.ErrConnect + r.ErrRead + r.ErrWrite + r.ErrStatus + r.ErrTimeout
	return r, nil
}

// Summary is the median and range of one figure over the rounds.
type Summary struct{ Med, Min, Max float64 }

func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Summary{Med: m, Min: s[0], Max: s[len(s)-1]}
}
