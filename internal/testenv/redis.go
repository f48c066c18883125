package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Redis is a throwaway redis-server started by a test as a child process on
// a free loopback port, with no persistence. Stop, Start and Restart keep the
// port, so clients configured with Addr reconnect to the new process; the
// data does not survive a Stop. The test's cleanup kills the server.
//
// Its methods are safe to call from several goroutines.
type Redis struct {
	t    testing.TB
	addr string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error // receives cmd.Wait's result once
}

// StartRedis starts a redis-server on a free port of 127.0.0.1 and waits until
// it answers PING. It fails the test if the binary is missing or the server
// does not come up. The server is stopped when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("testenv: redis-server not found on PATH (install the redis-server package): %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("testenv: finding a free port for redis: %v", err)
	}
	r := &Redis{t: t, port: port, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	t.Cleanup(func() { _ = r.stop() })
	if err := r.start(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return r
}

// Addr returns the server's host:port, the same across restarts.
func (r *Redis) Addr() string { return r.addr }

// URL returns a redis:// URL for database 0 of the server.
func (r *Redis) URL() string { return "redis://" + r.addr + "/0" }

// Stop kills the server and waits for it to exit. Stopping a stopped server
// does nothing.
func (r *Redis) Stop() {
	r.t.Helper()
	if err := r.stop(); err != nil {
		r.t.Fatalf("testenv: stopping redis: %v", err)
	}
}

// Start starts the server again on the same port after Stop, and waits until
// it answers PING. Starting a running server does nothing.
func (r *Redis) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("testenv: %v", err)
	}
}

// Restart stops and starts the server on the same port.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	r.Start()
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cmd := exec.Command("redis-server",
			"--port", strconv.Itoa(r.port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--protected-mode", "no",
			"--loglevel", "warning",
		)
		cmd.Dir = os.TempDir()
		cmd.Stdout = &lineTail{}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting redis-server on %s: %w", r.addr, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		err := waitRedisReady(r.addr, exited, deadline)
		if err == nil {
			r.cmd = cmd
			r.exited = exited
			return nil
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		// The port may still be held by the process we just stopped (or
		// another one); retry until the deadline.
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not become ready: %w (output: %s)", r.addr, err, cmd.Stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *Redis) stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	cmd := r.cmd
	r.cmd = nil
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing redis-server on %s: %w", r.addr, err)
	}
	select {
	case <-r.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("redis-server on %s did not exit 10s after SIGKILL", r.addr)
	}
}

// waitRedisReady polls addr with PING until it answers PONG, the process
// exits, or the deadline passes.
func waitRedisReady(addr string, exited <-chan error, deadline time.Time) error {
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited: %v", err)
		default:
		}
		if err := pingRedis(addr); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pingRedis(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected PING reply %q", strings.TrimSpace(line))
	}
	return nil
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lineTail keeps the last few KiB a child process wrote, for error messages.
type lineTail struct {
	mu  sync.Mutex
	buf []byte
}

func (l *lineTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) > 4096 {
		l.buf = l.buf[len(l.buf)-4096:]
	}
	return len(p), nil
}

func (l *lineTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(string(l.buf))
}
