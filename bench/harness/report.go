package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// stat is the median and range of one measure over the rounds.
type stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func statOf(xs []float64) stat {
	if len(xs) == 0 {
		return stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// summary is one contender's rounds, summarised.
type summary struct {
	Contender string `json:"contender"`
	Rounds    int    `json:"rounds"`
	RPS       stat   `json:"rps"`
	P50US     stat   `json:"p50_us"`
	P90US     stat   `json:"p90_us"`
	P99US     stat   `json:"p99_us"`
	P999US    stat   `json:"p999_us"`
	CPUCores  stat   `json:"cpu_cores"`
	// RPSPerCPU is requests/s divided by the CPU cores the contender
	// used: its throughput per core actually spent.
	RPSPerCPU stat     `json:"rps_per_cpu_core"`
	Errors    int64    `json:"errors"`
	Samples   []sample `json:"samples"`
}

func summarize(name string, ss []sample) summary {
	col := func(f func(sample) float64) stat {
		xs := make([]float64, 0, len(ss))
		for _, s := range ss {
			xs = append(xs, f(s))
		}
		return statOf(xs)
	}
	var errs int64
	for _, s := range ss {
		errs += s.Errors
	}
	return summary{
		Contender: name, Rounds: len(ss), Errors: errs, Samples: ss,
		RPS:      col(func(s sample) float64 { return s.RPS }),
		P50US:    col(func(s sample) float64 { return s.P50US }),
		P90US:    col(func(s sample) float64 { return s.P90US }),
		P99US:    col(func(s sample) float64 { return s.P99US }),
		P999US:   col(func(s sample) float64 { return s.P999US }),
		CPUCores: col(func(s sample) float64 { return s.CPUCores }),
		RPSPerCPU: col(func(s sample) float64 {
			if s.CPUCores <= 0 {
				return 0
			}
			return s.RPS / s.CPUCores
		}),
	}
}

func find(ss []summary, name string) *summary {
	for i := range ss {
		if ss[i].Contender == name {
			return &ss[i]
		}
	}
	return nil
}

// ms formats microseconds as milliseconds with three significant digits.
func ms(us float64) string {
	v := us / 1000
	switch {
	case v < 1:
		return fmt.Sprintf("%.3f", v)
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func msRange(s stat) string {
	return fmt.Sprintf("%s (%s–%s)", ms(s.Median), ms(s.Min), ms(s.Max))
}

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a/b) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func coresLabel(run lbRun) string {
	pin := ""
	if run.Pinned {
		pin = "; contender pinned to CPU 0, wrk/openloop and backends to the other CPU(s)"
	}
	return fmt.Sprintf("%d core(s) each (GOMAXPROCS=%d, worker_processes %d, nbthread %d)%s",
		run.Cores, run.Cores, run.Cores, run.Cores, pin)
}

func runMarkdown(f lbFlags, run lbRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n", coresLabel(run))
	fmt.Fprintf(&b, "Saturation: `wrk -t%d -c%d -d%ds`, %d rounds in rotating order, median (min–max); latency in ms.\n\n",
		run.WrkThreads, f.conns, int(f.duration.Seconds()), f.rounds)
	b.WriteString("| contender | req/s | p50 | p99 | p99.9 | CPU used (cores) | req/s per CPU-core | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, s := range run.Saturation {
		fmt.Fprintf(&b, "| %s | %.0f (%.0f–%.0f) | %s | %s | %s | %.2f | %.0f | %d |\n",
			s.Contender, s.RPS.Median, s.RPS.Min, s.RPS.Max, msRange(s.P50US), msRange(s.P99US), msRange(s.P999US),
			s.CPUCores.Median, s.RPSPerCPU.Median, s.Errors)
	}
	if so := find(run.Saturation, "scaleout"); so != nil {
		b.WriteString("\n| scaleout ÷ peer | req/s | p50 | p99 | p99.9 | req/s per CPU-core |\n|---|---|---|---|---|---|\n")
		for _, s := range run.Saturation {
			if s.Contender == "scaleout" {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", s.Contender,
				ratio(so.RPS.Median, s.RPS.Median), ratio(so.P50US.Median, s.P50US.Median),
				ratio(so.P99US.Median, s.P99US.Median), ratio(so.P999US.Median, s.P999US.Median),
				ratio(so.RPSPerCPU.Median, s.RPSPerCPU.Median))
		}
	}
	if len(run.Fixed) > 0 {
		fmt.Fprintf(&b, "\nFixed rate (open loop, latency from the intended send time): %.0f req/s = %.0f%% of nginx's median, %d connections, %d rounds × %ds; latency in ms.\n\n",
			run.FixedRate, f.fixedFraction*100, f.conns, f.fixedRounds, int(f.fixedDuration.Seconds()))
		b.WriteString("| contender | achieved req/s | p50 | p90 | p99 | p99.9 | CPU used (cores) | errors |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|\n")
		for _, s := range run.Fixed {
			fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %s | %.2f | %d |\n",
				s.Contender, s.RPS.Median, msRange(s.P50US), ms(s.P90US.Median), msRange(s.P99US), msRange(s.P999US),
				s.CPUCores.Median, s.Errors)
		}
		if so := find(run.Fixed, "scaleout"); so != nil {
			b.WriteString("\n| scaleout ÷ peer, fixed rate | p50 | p90 | p99 | p99.9 |\n|---|---|---|---|---|\n")
			for _, s := range run.Fixed {
				if s.Contender == "scaleout" {
					continue
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", s.Contender,
					ratio(so.P50US.Median, s.P50US.Median), ratio(so.P90US.Median, s.P90US.Median),
					ratio(so.P99US.Median, s.P99US.Median), ratio(so.P999US.Median, s.P999US.Median))
			}
		}
	}
	return b.String()
}

func memoryMarkdown(ms []memoryResult) string {
	var b strings.Builder
	b.WriteString("### Resident memory (VmRSS, all processes of the contender; 1 core)\n\n")
	b.WriteString("| contender | clients | opened | RSS before | RSS with clients | per connection | note |\n|---|---|---|---|---|---|---|\n")
	for _, m := range ms {
		what := fmt.Sprintf("%d idle keep-alive", m.Conns)
		if m.Mode == "slow" {
			what = fmt.Sprintf("%d slow (1 byte / 100 ms)", m.Conns)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %.1f MiB | %.1f MiB | %.1f KiB | %s |\n",
			m.Contender, what, m.Opened, float64(m.BaseKiB)/1024, float64(m.LoadedKiB)/1024, m.PerConnKB,
			memNote(m))
	}
	return b.String()
}

func profileMarkdown(p *profileResult) string {
	var b strings.Builder
	b.WriteString("### CPU profile of scaleout (1 core, under wrk load)\n\n")
	fmt.Fprintf(&b, "%d requests at %.0f req/s while profiling; %.1f allocations and %.0f bytes allocated per request; %d GC cycles.\n",
		p.Requests, p.RPS, p.AllocsPerReq, p.BytesPerReq, p.GCCycles)
	fmt.Fprintf(&b, "Profiles: `%s`, `%s` (with `.base`).\n\n", p.CPUProfile, p.AllocProfile)
	for _, t := range []struct {
		title string
		lines []string
	}{
		{"CPU, flat", p.TopCPU}, {"CPU, cumulative", p.TopCPUCum},
		{"allocations (objects) during the load", p.TopAllocs}, {"allocations (bytes) during the load", p.TopAllocBytes},
	} {
		fmt.Fprintf(&b, "%s:\n\n```\n%s\n```\n\n", t.title, strings.Join(t.lines, "\n"))
	}
	return b.String()
}

// targetVerdict is one of the per-core targets of the issue.
type targetVerdict struct {
	What  string  `json:"what"`
	Ratio float64 `json:"ratio"`
	Bound string  `json:"bound"`
	Met   bool    `json:"met"`
}

// targets checks the 1-core run against the targets.
func targets(runs []lbRun) []targetVerdict {
	var run *lbRun
	for i := range runs {
		if runs[i].Cores == 1 {
			run = &runs[i]
		}
	}
	if run == nil {
		return nil
	}
	var out []targetVerdict
	so, ng, cd := find(run.Saturation, "scaleout"), find(run.Saturation, "nginx"), find(run.Saturation, "caddy")
	if so != nil && ng != nil {
		r := so.RPS.Median / ng.RPS.Median
		out = append(out, targetVerdict{"req/s, scaleout ÷ nginx", r, "≥ 0.8", r >= 0.8})
		r = so.P99US.Median / ng.P99US.Median
		out = append(out, targetVerdict{"p99 at saturation, scaleout ÷ nginx", r, "≤ 1.5", r <= 1.5})
	}
	if so != nil && cd != nil {
		r := so.RPS.Median / cd.RPS.Median
		out = append(out, targetVerdict{"req/s, scaleout ÷ Caddy", r, "≥ 4", r >= 4})
	}
	// The same per CPU-second actually used: comparable also when the load
	// generator or other tenants of the machine limited the throughput.
	if so != nil && ng != nil && ng.RPSPerCPU.Median > 0 {
		r := so.RPSPerCPU.Median / ng.RPSPerCPU.Median
		out = append(out, targetVerdict{"req/s per CPU-core, scaleout ÷ nginx", r, "≥ 0.8", r >= 0.8})
	}
	if so != nil && cd != nil && cd.RPSPerCPU.Median > 0 {
		r := so.RPSPerCPU.Median / cd.RPSPerCPU.Median
		out = append(out, targetVerdict{"req/s per CPU-core, scaleout ÷ Caddy", r, "≥ 4", r >= 4})
	}
	fso, fng := find(run.Fixed, "scaleout"), find(run.Fixed, "nginx")
	if fso != nil && fng != nil {
		r := fso.P99US.Median / fng.P99US.Median
		out = append(out, targetVerdict{"p99 at the fixed rate, scaleout ÷ nginx", r, "≤ 1.2", r <= 1.2})
	}
	return out
}

func targetsMarkdown(ts []targetVerdict) string {
	var b strings.Builder
	b.WriteString("### Targets (1 core each)\n\n| target | measured | bound | |\n|---|---|---|---|\n")
	for _, t := range ts {
		v := "met"
		if !t.Met {
			v = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %.2f | %s | %s |\n", t.What, t.Ratio, t.Bound, v)
	}
	return b.String()
}

func fullMarkdown(f lbFlags, res lbResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## bench/run lb — %s\n\n", res.Started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Command: `%s`\n\n%s\n\n", res.Command, res.Machine.line())
	b.WriteString("Backend: 2 processes of bench/backend (fasthttp, GOMAXPROCS=1, " +
		fmt.Sprintf("%d-byte body). ", f.body) +
		"Every proxy: round-robin over both, keep-alive to the backends, client Host kept, X-Forwarded-For/-Proto/-Host set, no access log. " +
		"`minimal` is bench/minproxy, a bare fasthttp proxy (no header work, retries or metrics): the ceiling for scaleout on the same stack; " +
		"`direct` is wrk against one backend.\n\n")
	for _, run := range res.Runs {
		b.WriteString(runMarkdown(f, run))
		b.WriteString("\n")
	}
	if len(res.Memory) > 0 {
		b.WriteString(memoryMarkdown(res.Memory))
		b.WriteString("\n")
	}
	if len(res.Targets) > 0 {
		b.WriteString(targetsMarkdown(res.Targets))
		b.WriteString("\n")
	}
	if res.Profile != nil {
		b.WriteString(profileMarkdown(res.Profile))
	}
	return b.String()
}

func memNote(m memoryResult) string {
	note := strings.ReplaceAll(m.Note, "\n", " ")
	if m.GoHeapKiB > 0 && m.Opened > 0 {
		if note != "" {
			note += "; "
		}
		note += fmt.Sprintf("Go heap in use %.0f MiB (%.1f KiB per connection), stacks %.0f MiB, held from the OS %.0f MiB",
			float64(m.GoHeapKiB)/1024, float64(m.GoHeapKiB)/float64(m.Opened),
			float64(m.GoStackKiB)/1024, float64(m.GoSysKiB)/1024)
	}
	return note
}
