package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// machine describes where a run happened.
type machine struct {
	CPUModel  string            `json:"cpu_model"`
	Cores     int               `json:"cores"`
	Kernel    string            `json:"kernel"`
	LoadAvg   string            `json:"loadavg_at_start"`
	GitCommit string            `json:"git_commit"`
	Versions  map[string]string `json:"versions"`
}

func (m machine) line() string {
	var vs []string
	for _, k := range []string{"go", "nginx", "haproxy", "caddy", "wrk"} {
		vs = append(vs, k+" "+m.Versions[k])
	}
	return fmt.Sprintf("Machine: %s, %d cores, Linux %s, load average at start %s; scaleout %s; %s.",
		m.CPUModel, m.Cores, m.Kernel, m.LoadAvg, m.GitCommit, strings.Join(vs, ", "))
}

func numCPU() int { return runtime.NumCPU() }

func machineInfo(ctx context.Context, bin string) machine {
	m := machine{Cores: numCPU(), Versions: map[string]string{}}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	m.GitCommit = os.Getenv("BENCH_GIT_COMMIT")
	if m.GitCommit == "" {
		m.GitCommit = "unknown"
	}
	m.Versions["go"] = strings.TrimPrefix(firstField(firstLine(ctx, "go", "version"), 2), "go")
	m.Versions["nginx"] = strings.TrimPrefix(firstLine(ctx, "nginx", "-v"), "nginx version: nginx/")
	m.Versions["haproxy"] = firstField(firstLine(ctx, "haproxy", "-v"), 2)
	m.Versions["caddy"] = caddyVersion(ctx, filepath.Join(bin, "caddy"))
	m.Versions["wrk"] = firstField(firstLine(ctx, "wrk", "-v"), 1)
	return m
}

func firstLine(ctx context.Context, name string, args ...string) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(cctx, name, args...).CombinedOutput()
	l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(l)
}

func firstField(s string, i int) string {
	f := strings.Fields(s)
	if i < len(f) {
		return f[i]
	}
	return s
}

// caddyVersion reads the module version from the binary's build
// information: `caddy version` says "unknown" when built by go install.
func caddyVersion(ctx context.Context, path string) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(cctx, "go", "version", "-m", path).Output()
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/caddyserver/caddy/v2" {
			return f[2]
		}
	}
	return "unknown"
}
