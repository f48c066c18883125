package proxy

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestBackendConnectionPool(t *testing.T) {
	t.Run("connections per backend are bounded and reused", func(t *testing.T) {
		var conns, active, maxActive atomic.Int64
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := active.Add(1)
			defer active.Add(-1)
			for m := maxActive.Load(); n > m && !maxActive.CompareAndSwap(m, n); m = maxActive.Load() {
			}
			time.Sleep(50 * time.Millisecond)
			fmt.Fprint(w, "ok")
		}))
		s.Listener = countingListener{s.Listener, &conns}
		s.Start()
		t.Cleanup(s.Close)
		pool := testPool(t, s.URL)
		addr := startProxy(t, New(Config{MaxConnsPerBackend: 2}), pool, ServerConfig{})
		var wg sync.WaitGroup
		var failed atomic.Int64
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if code, _, _ := do(t, addr, "GET", fmt.Sprint(i), ""); code != 200 {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
		if failed.Load() != 0 {
			t.Fatalf("%d requests failed waiting for a connection", failed.Load())
		}
		if maxActive.Load() > 2 || conns.Load() > 2 {
			t.Fatalf("backend saw %d concurrent requests on %d connections, want at most 2", maxActive.Load(), conns.Load())
		}
		assertIdle(t, pool)
	})
	t.Run("idle connections close after IdleConnTimeout", func(t *testing.T) {
		s := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
		pool := testPool(t, s.URL)
		p := New(Config{IdleConnTimeout: 100 * time.Millisecond})
		addr := startProxy(t, p, pool, ServerConfig{})
		if code, _, _ := do(t, addr, "GET", "1", ""); code != 200 {
			t.Fatal(code)
		}
		hc := p.client(pool.Backends()[0]).hc
		if hc.ConnsCount() != 1 {
			t.Fatalf("%d connections after a request, want 1 kept alive", hc.ConnsCount())
		}
		deadline := time.Now().Add(3 * time.Second)
		for hc.ConnsCount() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("idle connection not closed")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("Forget drops a backend's connections", func(t *testing.T) {
		s := backend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
		pool := testPool(t, s.URL)
		p := New(Config{})
		addr := startProxy(t, p, pool, ServerConfig{})
		if code, _, _ := do(t, addr, "GET", "1", ""); code != 200 {
			t.Fatal(code)
		}
		b := pool.Backends()[0]
		hc := p.client(b).hc
		p.Forget(b.ID)
		if n := hc.ConnsCount(); n != 0 {
			t.Fatalf("%d connections left after Forget", n)
		}
		if p.client(b).hc == hc {
			t.Fatal("Forget kept the connection pool")
		}
	})
	t.Run("Forget closes connections in use once their requests end", func(t *testing.T) {
		s := backend(t, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(300 * time.Millisecond)
			fmt.Fprint(w, "ok")
		})
		pool := testPool(t, s.URL)
		p := New(Config{})
		addr := startProxy(t, p, pool, ServerConfig{})
		b := pool.Backends()[0]
		done := make(chan int)
		go func() {
			code, _, _ := do(t, addr, "GET", "1", "")
			done <- code
		}()
		deadline := time.Now().Add(3 * time.Second)
		for b.Active() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		hc := p.client(b).hc
		p.Forget(b.ID)
		if code := <-done; code != 200 {
			t.Fatalf("request in flight during Forget: %d", code)
		}
		for hc.ConnsCount() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the connection of a forgotten backend stayed open")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// unacceptingBackend listens with a backlog of one and never accepts; once
// the backlog is full, connecting to it hangs until the dial times out.
func unacceptingBackend(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the backlog.
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Skip("this kernel accepts connections beyond the backlog; cannot make a dial hang")
	}
	return "http://" + addr
}

func TestDialTimeout(t *testing.T) {
	pool := testPool(t, unacceptingBackend(t))
	addr := startProxy(t, New(Config{DialTimeout: 200 * time.Millisecond}), pool, ServerConfig{})
	start := time.Now()
	code, body, _ := do(t, addr, "GET", "1", "")
	if code != 504 {
		t.Fatalf("got %d %q, want 504", code, body)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("took %v with a 200ms dial timeout", took)
	}
	assertIdle(t, pool)
}
