package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a server process the harness started; it runs in its own process
// group, which stop signals as a whole (nginx's workers included).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// procSpec says how to start a server.
type procSpec struct {
	name string
	argv []string
	env  []string // added to the harness's environment
	cpus string   // taskset CPU list; empty: no pinning
	dir  string   // working directory and log location
}

// startProc starts spec; its stdout and stderr go to dir/name.log.
func startProc(spec procSpec) (*proc, error) {
	argv := spec.argv
	if spec.cpus != "" {
		argv = append([]string{"taskset", "-c", spec.cpus}, argv...)
	}
	logPath := filepath.Join(spec.dir, spec.name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log: %w", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = spec.dir
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", spec.name, err)
	}
	p := &proc{name: spec.name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// pid is the process started (taskset execs the program in place).
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after 5 s.
func (p *proc) stop() {
	if p == nil || p.exited() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// waitHTTP polls url until it answers 200, the process exits or 15 s pass.
func waitHTTP(ctx context.Context, p *proc, url string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail())
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s after 15 s: %v\n%s", p.name, url, last, p.tail())
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// treePIDs returns pid and its direct children (nginx's workers).
func treePIDs(pid int) []int {
	pids := []int{pid}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return pids
	}
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if st, err := readStat(child); err == nil && st.ppid == pid {
			pids = append(pids, child)
		}
	}
	return pids
}

type procStat struct {
	ppid         int
	utime, stime uint64 // clock ticks
}

// readStat parses /proc/PID/stat; the command name may hold spaces, so
// fields are counted after its closing parenthesis.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return procStat{}, errors.New("short stat")
	}
	// f[0] is state (field 3); ppid is field 4, utime 14, stime 15.
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return procStat{ppid: ppid, utime: ut, stime: st}, nil
}

// clockTick is USER_HZ, 100 on every Linux configuration Go supports.
const clockTick = 100

// cpuSeconds is the CPU time used so far by pid and its direct children.
func cpuSeconds(pid int) float64 {
	var ticks uint64
	for _, p := range treePIDs(pid) {
		if st, err := readStat(p); err == nil {
			ticks += st.utime + st.stime
		}
	}
	return float64(ticks) / clockTick
}

// rssKiB is the resident memory (VmRSS) of pid and its direct children.
func rssKiB(pid int) int64 {
	var total int64
	for _, p := range treePIDs(pid) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += n
			}
		}
		f.Close()
	}
	return total
}

// group stops a set of processes together.
type group struct {
	mu    sync.Mutex
	procs []*proc
}

func (g *group) add(p *proc) {
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
}

func (g *group) stopAll() {
	g.mu.Lock()
	ps := g.procs
	g.procs = nil
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(p.stop)
	}
	wg.Wait()
}
