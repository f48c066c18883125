package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// sample is one measured load run against one contender.
type sample struct {
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	Errors   int64   `json:"errors"` // connect, read, write, timeout and non-2xx
	MeanUS   float64 `json:"mean_us"`
	P50US    float64 `json:"p50_us"`
	P90US    float64 `json:"p90_us"`
	P99US    float64 `json:"p99_us"`
	P999US   float64 `json:"p999_us"`
	MaxUS    float64 `json:"max_us"`
	// CPUCores is the CPU time the contender (all its processes) used
	// during the run divided by the run's length.
	CPUCores float64 `json:"cpu_cores"`
}

// wrkReport is the line report.lua prints.
type wrkReport struct {
	Requests   int64   `json:"requests"`
	DurationUS int64   `json:"duration_us"`
	ErrConnect int64   `json:"errors_connect"`
	ErrRead    int64   `json:"errors_read"`
	ErrWrite   int64   `json:"errors_write"`
	ErrStatus  int64   `json:"errors_status"`
	ErrTimeout int64   `json:"errors_timeout"`
	MeanUS     float64 `json:"mean_us"`
	P50US      float64 `json:"p50_us"`
	P90US      float64 `json:"p90_us"`
	P99US      float64 `json:"p99_us"`
	P999US     float64 `json:"p999_us"`
	MaxUS      float64 `json:"max_us"`
}

// wrkLoad is a closed-loop wrk run: fixed connections and duration.
type wrkLoad struct {
	threads, conns int
	duration       time.Duration
	script         string // report.lua
	cpus           string // taskset CPU list for wrk; empty: none
}

func (w wrkLoad) argv(url string) []string {
	a := []string{
		"wrk", "-t", strconv.Itoa(w.threads), "-c", strconv.Itoa(w.conns),
		"-d", fmt.Sprintf("%ds", int(w.duration.Seconds())), "--timeout", "5s",
		"-s", w.script, url,
	}
	if w.cpus != "" {
		a = append([]string{"taskset", "-c", w.cpus}, a...)
	}
	return a
}

// run loads url for w.duration and measures the CPU time of pid meanwhile
// (pid 0: none).
func (w wrkLoad) run(ctx context.Context, url string, pid int) (sample, error) {
	argv := w.argv(url)
	cctx, cancel := context.WithTimeout(ctx, w.duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	var cpu0 float64
	if pid > 0 {
		cpu0 = cpuSeconds(pid)
	}
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start).Seconds()
	var cpu float64
	if pid > 0 {
		cpu = cpuSeconds(pid) - cpu0
	}
	if err != nil {
		return sample{}, fmt.Errorf("%s: %w\n%s%s", strings.Join(argv, " "), err, out.String(), errb.String())
	}
	var r wrkReport
	if err := jsonLine(&out, "WRKJSON ", &r); err != nil {
		return sample{}, fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out.String())
	}
	secs := float64(r.DurationUS) / 1e6
	s := sample{
		Requests: r.Requests, Seconds: secs,
		Errors: r.ErrConnect + r.ErrRead + r.ErrWrite + r.ErrStatus + r.ErrTimeout,
		MeanUS: r.MeanUS, P50US: r.P50US, P90US: r.P90US, P99US: r.P99US, P999US: r.P999US, MaxUS: r.MaxUS,
	}
	if secs > 0 {
		s.RPS = float64(r.Requests) / secs
	}
	if wall > 0 {
		s.CPUCores = cpu / wall
	}
	return s, nil
}

// openLoad is a fixed-rate run of bench/openloop.
type openLoad struct {
	bin      string
	rate     float64
	conns    int
	duration time.Duration
	cpus     string
}

// openReport is what bench/openloop prints.
type openReport struct {
	Sent        int     `json:"sent"`
	OK          int     `json:"ok"`
	Errors      int     `json:"errors"`
	Non2xx      int     `json:"non_2xx"`
	DurationS   float64 `json:"duration_s"`
	AchievedRPS float64 `json:"achieved_rps"`
	MeanUS      float64 `json:"mean_us"`
	P50US       float64 `json:"p50_us"`
	P90US       float64 `json:"p90_us"`
	P99US       float64 `json:"p99_us"`
	P999US      float64 `json:"p999_us"`
	MaxUS       float64 `json:"max_us"`
	FirstError  string  `json:"first_error"`
}

func (o openLoad) run(ctx context.Context, url string, pid int) (sample, error) {
	argv := []string{
		o.bin, "-url", url, "-rate", strconv.FormatFloat(o.rate, 'f', 0, 64),
		"-conns", strconv.Itoa(o.conns), "-duration", o.duration.String(),
	}
	if o.cpus != "" {
		argv = append([]string{"taskset", "-c", o.cpus}, argv...)
	}
	cctx, cancel := context.WithTimeout(ctx, o.duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cpu0 := cpuSeconds(pid)
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start).Seconds()
	cpu := cpuSeconds(pid) - cpu0
	if err != nil {
		return sample{}, fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, errb.String())
	}
	var r openReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return sample{}, fmt.Errorf("reading openloop output: %w\n%s", err, out.String())
	}
	return sample{
		Requests: int64(r.OK), Seconds: r.DurationS, RPS: r.AchievedRPS,
		Errors: int64(r.Errors + r.Non2xx),
		MeanUS: r.MeanUS, P50US: r.P50US, P90US: r.P90US, P99US: r.P99US, P999US: r.P999US, MaxUS: r.MaxUS,
		CPUCores: cpu / wall,
	}, nil
}

// jsonLine finds the line starting with prefix in r and decodes the rest.
func jsonLine(r io.Reader, prefix string, v any) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return json.Unmarshal([]byte(rest), v)
		}
	}
	return fmt.Errorf("no %q line in the output", strings.TrimSpace(prefix))
}
