package main

import (
	"os"
	"strings"
	"testing"
)

func TestStatOf(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want stat
	}{
		{"empty", nil, stat{}},
		{"one", []float64{3}, stat{3, 3, 3}},
		{"odd count takes the middle", []float64{5, 1, 3}, stat{3, 1, 5}},
		{"even count averages the middle two", []float64{4, 1, 2, 10}, stat{3, 1, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statOf(tt.in); got != tt.want {
				t.Errorf("statOf(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSummarizeRPSPerCPU(t *testing.T) {
	s := summarize("x", []sample{{RPS: 1000, CPUCores: 0.5}, {RPS: 900, CPUCores: 0}})
	if s.RPSPerCPU.Max != 2000 || s.RPSPerCPU.Min != 0 {
		t.Errorf("RPSPerCPU = %+v, want max 2000 (1000/0.5) and min 0 (no CPU measured)", s.RPSPerCPU)
	}
	if s.Rounds != 2 || s.RPS.Median != 950 {
		t.Errorf("rounds %d median %v, want 2 and 950", s.Rounds, s.RPS.Median)
	}
}

func sum(name string, rps, p99 float64) summary {
	return summary{Contender: name, RPS: stat{Median: rps}, P99US: stat{Median: p99}}
}

func TestTargets(t *testing.T) {
	tests := []struct {
		name string
		runs []lbRun
		want map[string]bool
	}{
		{
			name: "all met",
			runs: []lbRun{{Cores: 1,
				Saturation: []summary{sum("scaleout", 900, 1400), sum("nginx", 1000, 1000), sum("caddy", 200, 5000)},
				Fixed:      []summary{sum("scaleout", 500, 110), sum("nginx", 500, 100)},
			}},
			want: map[string]bool{
				"req/s, scaleout ÷ nginx": true, "p99 at saturation, scaleout ÷ nginx": true,
				"req/s, scaleout ÷ Caddy": true, "p99 at the fixed rate, scaleout ÷ nginx": true,
			},
		},
		{
			name: "all missed",
			runs: []lbRun{{Cores: 1,
				Saturation: []summary{sum("scaleout", 700, 1600), sum("nginx", 1000, 1000), sum("caddy", 200, 5000)},
				Fixed:      []summary{sum("scaleout", 500, 130), sum("nginx", 500, 100)},
			}},
			want: map[string]bool{
				"req/s, scaleout ÷ nginx": false, "p99 at saturation, scaleout ÷ nginx": false,
				"req/s, scaleout ÷ Caddy": false, "p99 at the fixed rate, scaleout ÷ nginx": false,
			},
		},
		{
			name: "efficiency counts CPU used, not throughput",
			runs: []lbRun{{Cores: 1, Saturation: []summary{
				{Contender: "scaleout", RPS: stat{Median: 500}, RPSPerCPU: stat{Median: 9000}},
				{Contender: "nginx", RPS: stat{Median: 1000}, RPSPerCPU: stat{Median: 10000}},
			}}},
			want: map[string]bool{
				"req/s, scaleout ÷ nginx": false, "p99 at saturation, scaleout ÷ nginx": false,
				"req/s per CPU-core, scaleout ÷ nginx": true,
			},
		},
		{
			name: "only the 1-core run counts",
			runs: []lbRun{{Cores: 2, Saturation: []summary{sum("scaleout", 1, 1), sum("nginx", 1000, 1)}}},
			want: map[string]bool{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := targets(tt.runs)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d verdicts %+v, want %d", len(got), got, len(tt.want))
			}
			for _, v := range got {
				if want, ok := tt.want[v.What]; !ok || want != v.Met {
					t.Errorf("%s: met = %v (ratio %.2f), want %v", v.What, v.Met, v.Ratio, want)
				}
			}
		})
	}
}

func TestRunMarkdownHasRatios(t *testing.T) {
	f := lbFlags{conns: 64, rounds: 5, fixedRounds: 3, fixedFraction: 0.5}
	run := lbRun{Cores: 1, WrkThreads: 1,
		Saturation: []summary{sum("scaleout", 900, 1400), sum("nginx", 1000, 1000)},
		Fixed:      []summary{sum("scaleout", 500, 110), sum("nginx", 500, 100)}, FixedRate: 500}
	md := runMarkdown(f, run)
	for _, want := range []string{"| nginx | 0.90× |", "| nginx | – | – | 1.10× |", "500 req/s = 50% of nginx"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestMS(t *testing.T) {
	for us, want := range map[float64]string{450: "0.450", 1234: "1.23", 45600: "45.6"} {
		if got := ms(us); got != want {
			t.Errorf("ms(%v) = %q, want %q", us, got, want)
		}
	}
}

func TestReadStatOfSelf(t *testing.T) {
	if cpuSeconds(1<<30) != 0 {
		t.Error("cpuSeconds of a missing process is not 0")
	}
	if rssKiB(selfPID()) <= 0 {
		t.Error("rssKiB of this process is not positive")
	}
}

func selfPID() int { return os.Getpid() }
