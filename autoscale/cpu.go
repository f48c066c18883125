package autoscale

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which Linux fixes at 100 for user space on every architecture.
const clockTick = 10 * time.Millisecond

// CPUTimes returns the CPU time (user and system) used so far by each
// running instance's process group (the instance and what it started), by
// backend ID, read from /proc.
func (p *Process) CPUTimes() map[string]time.Duration {
	p.mu.Lock()
	groups := make(map[int]string, len(p.procs))
	for _, pr := range p.procs {
		if pr.pid > 0 && pr.backend != "" && pr.state != Stopping {
			groups[pr.pid] = pr.backend
		}
	}
	p.mu.Unlock()
	out := make(map[string]time.Duration, len(groups))
	if len(groups) == 0 {
		return out
	}
	for pgid, t := range groupCPU("/proc", groups) {
		out[groups[pgid]] = t
	}
	return out
}

// groupCPU sums the CPU time of the processes under procDir whose process
// group is one of groups. Processes that vanish meanwhile are skipped.
func groupCPU(procDir string, groups map[int]string) map[int]time.Duration {
	out := map[int]time.Duration{}
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile(procDir + "/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st, err := parseStat(data)
		if err != nil {
			continue
		}
		if _, ok := groups[st.pgrp]; ok {
			out[st.pgrp] += st.cpu
		}
	}
	return out
}

type procStat struct {
	pgrp int
	cpu  time.Duration
}

// parseStat reads the process group and CPU time (utime + stime) from the
// contents of /proc/<pid>/stat. The command name, in parentheses, may hold
// spaces and parentheses: the fields are counted from the last ')'.
func parseStat(data []byte) (procStat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat: no command name")
	}
	f := bytes.Fields(data[i+1:])
	// f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	pgrp, err := strconv.Atoi(string(f[2]))
	if err != nil {
		return procStat{}, fmt.Errorf("stat: pgrp: %w", err)
	}
	ut, err := strconv.ParseUint(string(f[11]), 10, 63)
	if err != nil {
		return procStat{}, fmt.Errorf("stat: utime: %w", err)
	}
	stime, err := strconv.ParseUint(string(f[12]), 10, 63)
	if err != nil {
		return procStat{}, fmt.Errorf("stat: stime: %w", err)
	}
	ticks := ut + stime
	if ticks > uint64(1<<62)/uint64(clockTick) {
		return procStat{}, fmt.Errorf("stat: cpu ticks %d out of range", ticks)
	}
	return procStat{pgrp: pgrp, cpu: time.Duration(ticks) * clockTick}, nil
}
