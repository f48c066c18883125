package main

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

// wrkResult is the JSON line bench/lb/report.lua prints at the end of a
// wrk run (latencies in microseconds).
type wrkResult struct {
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

// wrkLoad is one fixed wrk load: the same for every contender.
type wrkLoad struct {
	lua      string // bench/lb/report.lua
	cpus     string // taskset CPU list for wrk; empty: none
	threads  int
	conns    int
	duration time.Duration
}

// run loads url for the configured duration (bounded by a timeout of twice
// that plus 10 s) and returns wrk's totals.
func (w wrkLoad) run(ctx context.Context, url string, d time.Duration) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*d+10*time.Second)
	defer cancel()
	argv := []string{"wrk", "-t" + strconv.Itoa(w.threads), "-c" + strconv.Itoa(w.conns),
		"-d" + strconv.Itoa(int(d.Seconds())) + "s", "--timeout", "5s", "-s", w.lua, url}
	if w.cpus != "" {
		argv = append([]string{"taskset", "-c", w.cpus}, argv...)
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w: %s", url, err, out)
	}
	i := bytes.Index(out, []byte("WRKJSON "))
	if i < 0 {
		return wrkResult{}, fmt.Errorf("wrk %s: no WRKJSON line in: %s", url, out)
	}
	line := out[i+len("WRKJSON "):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	var r wrkResult
	if err := json.Unmarshal(line, &r); err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: parsing %q: %w", url, line, err)
	}
	if r.DurationUS > 0 {
		r.RPS = float64(r.Requests) / (float64(r.DurationUS) / 1e6)
	}
	r.Errors = r.ErrConnect + r.ErrRead + r.ErrWrite + r.ErrStatus + r.ErrTimeout
	return r, nil
}

// summary is the median and range of one figure over the rounds.
type summary struct{ med, min, max float64 }

func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{med: m, min: s[0], max: s[len(s)-1]}
}
