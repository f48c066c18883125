package autoscale

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		line     string
		pgrp     int
		cpu      time.Duration
		errMatch string
	}{
		{"plain", "4242 (app) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 5 0 100 0 0", 4242, 2 * time.Second, ""},
		{"name with spaces and parens", "7 (my (odd) app) R 1 99 99 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 0 0", 99, 30 * time.Millisecond, ""},
		{"no name", "7 app R 1 99", 0, 0, "no command name"},
		{"truncated", "7 (app) R 1 99 99", 0, 0, "fields after the command name"},
		{"bad utime", "7 (app) R 1 99 99 0 -1 0 0 0 0 0 x 2 0", 0, 0, "utime"},
		{"huge", "7 (app) R 1 99 99 0 -1 0 0 0 0 0 9223372036854775807 0 0", 0, 0, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, err := parseStat([]byte(tt.line))
			if tt.errMatch != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errMatch) {
					t.Fatalf("error %v, want %q", err, tt.errMatch)
				}
				return
			}
			if err != nil || st.pgrp != tt.pgrp || st.cpu != tt.cpu {
				t.Fatalf("got %+v, %v; want pgrp %d cpu %v", st, err, tt.pgrp, tt.cpu)
			}
		})
	}
}

func TestGroupCPUSumsTheGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(pid, line string) {
		if err := os.MkdirAll(filepath.Join(dir, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pid, "stat"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10", "10 (app) S 1 10 10 0 -1 0 0 0 0 0 100 0 0 0 20 0 1 0 1 0 0")
	write("11", "11 (child) S 10 10 10 0 -1 0 0 0 0 0 20 30 0 0 20 0 1 0 1 0 0")
	write("12", "12 (other) S 1 12 12 0 -1 0 0 0 0 0 999 0 0 0 20 0 1 0 1 0 0")
	write("13", "garbage")
	if err := os.MkdirAll(filepath.Join(dir, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	got := groupCPU(dir, map[int]string{10: "a", 20: "b"})
	if len(got) != 1 || got[10] != 1500*time.Millisecond {
		t.Fatalf("got %v, want group 10 at 1.5s", got)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("4242 (app) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 5 0 100 0 0"))
	f.Add([]byte("7 (my (odd) app) R 1 99 99 0 -1 0 0 0 0 0 1 2 0 0"))
	f.Add([]byte("7 (app"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseStat(data)
		if err == nil && st.cpu < 0 {
			t.Fatalf("negative cpu %v from %q", st.cpu, data)
		}
	})
}
