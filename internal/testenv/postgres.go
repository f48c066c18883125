package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrPostgresUnavailable is returned when the PostgreSQL binaries or the
// privileges needed to run them as the postgres user are missing.
var ErrPostgresUnavailable = errors.New("testenv: cannot run PostgreSQL")

// postgresSettings are passed to every server with -c. They trade
// durability for speed: these servers hold nothing worth keeping.
func postgresSettings() []string {
	return []string{
		"listen_addresses=127.0.0.1",
		"shared_buffers=16MB",
		"max_connections=100",
		"fsync=off",
		"synchronous_commit=off",
		"full_page_writes=off",
		"wal_level=replica",
		"max_wal_senders=10",
		"max_replication_slots=10",
		"wal_keep_size=256MB",
		"hot_standby=on",
		"wal_retrieve_retry_interval=200ms",
		"wal_receiver_status_interval=1s",
		"checkpoint_timeout=30min",
		"logging_collector=off",
		"log_min_messages=warning",
	}
}

// PostgresCluster is a throw-away PostgreSQL primary with streaming
// replicas. Node 0 is the first primary; nodes 1..N start as its replicas.
type PostgresCluster struct {
	dir  string
	bin  string
	cred *syscall.Credential

	mu    sync.Mutex
	nodes []*pgNode
}

type pgNode struct {
	port int
	data string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartPostgresCluster starts a primary and the given number of replicas,
// waits until every replica streams, and closes the cluster in t.Cleanup.
// It fails the test (t.Fatal) with the reason when the cluster cannot start.
func StartPostgresCluster(t testing.TB, replicas int) *PostgresCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := NewPostgresCluster(ctx, replicas)
	if err != nil {
		t.Fatalf("starting PostgreSQL cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("closing PostgreSQL cluster: %v", err)
		}
	})
	return c
}

// NewPostgresCluster starts a primary and the given number of replicas in a
// new temporary directory and waits until every replica streams from the
// primary. The caller must call Close, which it also does itself on error.
func NewPostgresCluster(ctx context.Context, replicas int) (c *PostgresCluster, err error) {
	if replicas < 0 {
		return nil, fmt.Errorf("testenv: replicas must be >= 0, got %d", replicas)
	}
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	cred, uid, gid, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	sweepStalePostgres()
	dir, err := os.MkdirTemp("", "scaleout-pg-")
	if err != nil {
		return nil, fmt.Errorf("testenv: creating temp dir: %w", err)
	}
	c = &PostgresCluster{dir: dir, bin: bin, cred: cred}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("testenv: chown %s to postgres: %w", dir, err)
	}

	primary := &pgNode{data: filepath.Join(dir, "node0")}
	out, err := c.run(ctx, "initdb", "-D", primary.data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if err != nil {
		return nil, fmt.Errorf("testenv: initdb: %w: %s", err, out)
	}
	c.nodes = append(c.nodes, primary)
	if err := c.startNode(ctx, 0); err != nil {
		return nil, err
	}
	for i := 1; i <= replicas; i++ {
		n := &pgNode{data: filepath.Join(dir, "node"+strconv.Itoa(i))}
		out, err := c.run(ctx, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.port),
			"-U", "postgres", "-D", n.data, "-R", "-X", "stream", "-c", "fast", "--no-sync")
		if err != nil {
			return nil, fmt.Errorf("testenv: pg_basebackup for node %d: %w: %s", i, err, out)
		}
		c.nodes = append(c.nodes, n)
		if err := c.startNode(ctx, i); err != nil {
			return nil, err
		}
	}
	if err := c.WaitStreaming(ctx, 0, replicas); err != nil {
		return nil, err
	}
	return c, nil
}

// postgresBin finds the newest /usr/lib/postgresql/*/bin holding postgres.
func postgresBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w: no postgres binary under /usr/lib/postgresql/*/bin", ErrPostgresUnavailable)
}

// postgresCredential returns the credential to run servers with: nil when
// this process already is the postgres user, that user's when it is root.
func postgresCredential() (cred *syscall.Credential, uid, gid int, err error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%w: looking up user postgres: %v", ErrPostgresUnavailable, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	switch os.Geteuid() {
	case uid:
		return nil, uid, gid, nil
	case 0:
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
	default:
		return nil, 0, 0, fmt.Errorf("%w: PostgreSQL refuses to run as root and must run as the postgres user; "+
			"run the tests as root (servers are started as postgres) or as postgres, not as uid %d",
			ErrPostgresUnavailable, os.Geteuid())
	}
}

// command builds a command running a PostgreSQL binary as postgres.
func (c *PostgresCluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	cmd.Env = []string{"LC_ALL=C", "PATH=" + c.bin + ":/usr/bin:/bin", "HOME=" + c.dir, "PGAPPNAME=testenv"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: c.cred,
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
	return cmd
}

// run runs a short-lived binary to completion and returns its output.
func (c *PostgresCluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := c.command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.Bytes(), err
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return out.Bytes(), ctx.Err()
	}
}

// pgFreePort asks the kernel for a free loopback port.
func pgFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startNode starts node i's server (on a new free port the first time) and
// waits until it accepts connections.
func (c *PostgresCluster) startNode(ctx context.Context, i int) error {
	n := c.nodes[i]
	if n.done != nil {
		select {
		case <-n.done:
		default:
			return fmt.Errorf("testenv: node %d is already running", i)
		}
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if n.port == 0 || attempt > 0 {
			p, err := pgFreePort()
			if err != nil {
				return fmt.Errorf("testenv: finding a free port: %w", err)
			}
			n.port = p
		}
		lastErr = c.spawn(ctx, i)
		if lastErr == nil {
			return nil
		}
		if ctx.Err() != nil || !bytes.Contains(c.logTail(i), []byte("could not bind")) {
			return lastErr
		}
	}
	return lastErr
}

func (c *PostgresCluster) spawn(ctx context.Context, i int) error {
	n := c.nodes[i]
	n.log = filepath.Join(c.dir, fmt.Sprintf("node%d.log", i))
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testenv: opening log: %w", err)
	}
	args := []string{"-D", n.data, "-p", strconv.Itoa(n.port), "-k", c.dir}
	for _, s := range postgresSettings() {
		args = append(args, "-c", s)
	}
	cmd := c.command("postgres", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("testenv: starting postgres for node %d: %w", i, err)
	}
	logf.Close()
	n.cmd = cmd
	n.done = make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(n.done)

	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.dsn(n.port))
		if err == nil {
			_ = conn.Close(cctx)
			cancel()
			return nil
		}
		cancel()
		select {
		case <-n.done:
			return fmt.Errorf("testenv: postgres node %d exited during start-up: %s", i, c.logTail(i))
		case <-ctx.Done():
			return fmt.Errorf("testenv: waiting for node %d: %w (last: %v)", i, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: node %d did not accept connections within 60s: %v: %s", i, err, c.logTail(i))
		}
	}
}

// logTail returns the last KiB of node i's server log.
func (c *PostgresCluster) logTail(i int) []byte {
	b, _ := os.ReadFile(c.nodes[i].log)
	if len(b) > 1024 {
		b = b[len(b)-1024:]
	}
	return b
}

func (c *PostgresCluster) dsn(port int) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
}

func (c *PostgresCluster) node(i int) (*pgNode, error) {
	if i < 0 || i >= len(c.nodes) {
		return nil, fmt.Errorf("testenv: no node %d (cluster has %d)", i, len(c.nodes))
	}
	return c.nodes[i], nil
}

// Len returns the number of nodes: the primary and the replicas.
func (c *PostgresCluster) Len() int { return len(c.nodes) }

// DSN returns the connection string of node i (0 is the first primary),
// user postgres with trust authentication, database postgres.
func (c *PostgresCluster) DSN(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		return ""
	}
	return c.dsn(c.nodes[i].port)
}

// DSNs returns the connection strings of all nodes, node 0 first.
func (c *PostgresCluster) DSNs() []string {
	out := make([]string, c.Len())
	for i := range out {
		out[i] = c.DSN(i)
	}
	return out
}

// Port returns the TCP port node i listens on.
func (c *PostgresCluster) Port(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		return 0
	}
	return c.nodes[i].port
}

// Stop shuts node i down with a fast shutdown (SIGINT: sessions are
// terminated, the server checkpoints and exits) and waits for the exit,
// killing it if ctx ends first.
func (c *PostgresCluster) Stop(ctx context.Context, i int) error {
	return c.signal(ctx, i, syscall.SIGINT)
}

// Kill kills node i and all its processes at once (SIGKILL), like a crash;
// the next Start runs crash recovery.
func (c *PostgresCluster) Kill(i int) error {
	return c.signal(context.Background(), i, syscall.SIGKILL)
}

func (c *PostgresCluster) signal(ctx context.Context, i int, sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.node(i)
	if err != nil {
		return err
	}
	if n.cmd == nil {
		return nil
	}
	select {
	case <-n.done:
		return nil
	default:
	}
	if sig == syscall.SIGKILL {
		err := killServer(n.cmd.Process.Pid, 10*time.Second)
		<-n.done
		return err
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
		return nil // the postmaster exits after its children
	case <-ctx.Done():
		err := killServer(n.cmd.Process.Pid, 10*time.Second)
		<-n.done
		return err
	}
}

// killServer kills a postmaster and its children at once. PostgreSQL
// puts every child in a session of its own (setsid), so the process group
// holds only the postmaster: the children are found through /proc while
// the postmaster is stopped and cannot fork, then killed, and waited for,
// since a child still alive holds the shared memory and the next start
// would refuse to run.
func killServer(pid int, timeout time.Duration) error {
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	pids := append(childrenOf(pid), pid)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	deadline := time.Now().Add(timeout)
	for _, p := range pids {
		for processAlive(p) {
			if time.Now().After(deadline) {
				return fmt.Errorf("testenv: process %d still alive %v after SIGKILL", p, timeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// procStat returns the state and parent pid of a process from
// /proc/pid/stat; ok is false if there is no such process.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid, true
}

// processAlive reports whether pid is a live (not zombie) process.
func processAlive(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != "Z" && state != "X"
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(p); ok && ppid == pid {
			kids = append(kids, p)
		}
	}
	return kids
}

// Start starts a stopped or killed node i again on the same port and data
// directory and waits until it accepts connections.
func (c *PostgresCluster) Start(ctx context.Context, i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.node(i); err != nil {
		return err
	}
	return c.spawn(ctx, i)
}

// exec runs one statement on node i over a fresh connection.
func (c *PostgresCluster) exec(ctx context.Context, i int, sql string) error {
	dsn := c.DSN(i)
	if dsn == "" {
		return fmt.Errorf("testenv: no node %d", i)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("testenv: connecting to node %d: %w", i, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("testenv: node %d: %s: %w", i, sql, err)
	}
	return nil
}

// PauseReplay pauses WAL replay on replica i (pg_wal_replay_pause): it
// keeps receiving WAL but falls behind.
func (c *PostgresCluster) PauseReplay(ctx context.Context, i int) error {
	return c.exec(ctx, i, "select pg_wal_replay_pause()")
}

// ResumeReplay resumes WAL replay on replica i (pg_wal_replay_resume).
func (c *PostgresCluster) ResumeReplay(ctx context.Context, i int) error {
	return c.exec(ctx, i, "select pg_wal_replay_resume()")
}

// Promote promotes replica i to primary (pg_promote) and waits until it
// has left recovery.
func (c *PostgresCluster) Promote(ctx context.Context, i int) error {
	return c.exec(ctx, i, "select pg_promote(true, 60)")
}

// Follow points replica i at node primary (primary_conninfo, reloaded
// without restart); with the default recovery_target_timeline=latest it
// follows a promoted node's new timeline.
func (c *PostgresCluster) Follow(ctx context.Context, i, primary int) error {
	port := c.Port(primary)
	if port == 0 {
		return fmt.Errorf("testenv: no node %d", primary)
	}
	sql := fmt.Sprintf("alter system set primary_conninfo = 'host=127.0.0.1 port=%d user=postgres'", port)
	if err := c.exec(ctx, i, sql); err != nil {
		return err
	}
	return c.exec(ctx, i, "select pg_reload_conf()")
}

// WaitStreaming waits until node primary has at least n replicas in
// state streaming (pg_stat_replication).
func (c *PostgresCluster) WaitStreaming(ctx context.Context, primary, n int) error {
	dsn := c.DSN(primary)
	if dsn == "" {
		return fmt.Errorf("testenv: no node %d", primary)
	}
	for {
		var got int
		err := func() error {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			return conn.QueryRow(ctx, "select count(*) from pg_stat_replication where state = 'streaming'").Scan(&got)
		}()
		if err == nil && got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testenv: waiting for %d streaming replicas on node %d (have %d, last error %v): %w",
				n, primary, got, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close kills every server of the cluster and removes its directory. It is
// safe to call more than once.
func (c *PostgresCluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.cmd == nil || n.cmd.Process == nil {
			continue
		}
		select {
		case <-n.done:
		default:
			_ = killServer(n.cmd.Process.Pid, 10*time.Second)
			<-n.done
		}
	}
	if c.dir == "" {
		return nil
	}
	dir := c.dir
	c.dir = ""
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("testenv: removing %s: %w", dir, err)
	}
	return nil
}

// sweepStalePostgres removes the directories of clusters whose test
// process died before it could clean up (its servers died with it, by the
// parent-death signal): older than ten minutes, with no live postmaster.
func sweepStalePostgres() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "scaleout-pg-*"))
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || time.Since(fi.ModTime()) < 10*time.Minute {
			continue
		}
		pids, _ := filepath.Glob(filepath.Join(d, "node*", "postmaster.pid"))
		live := false
		for _, p := range pids {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			first, _, _ := strings.Cut(string(b), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && syscall.Kill(pid, 0) == nil {
				live = true
			}
		}
		if !live {
			_ = os.RemoveAll(d)
		}
	}
}
