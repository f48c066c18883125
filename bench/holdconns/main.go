// Command holdconns opens many client connections to an HTTP server and
// holds them, so that the server's memory per connection can be measured.
//
//	holdconns -addr 127.0.0.1:8080 -n 10000 -mode idle -hold 30s
//	holdconns -addr 127.0.0.1:8080 -n 1000 -mode slow -hold 30s
//
// In idle mode each connection sends one keep-alive GET, reads the response
// and then stays open and silent: what a browser's idle keep-alive
// connection costs the server. In slow mode each connection sends its
// requests one byte every -byte-every (100 ms by default, so a request takes
// about 4 s, well under the usual header timeouts), reads the response and
// starts the next: at any moment every connection has a request in progress.
//
// When all connections are open it prints "ready N" on stdout; it stops after
// -hold, or earlier on SIGINT or SIGTERM, and prints one JSON summary line.
// Only loopback addresses are accepted.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Summary is the JSON line printed at the end.
type Summary struct {
	Mode      string `json:"mode"`
	Opened    int64  `json:"opened"`
	Failed    int64  `json:"failed"`
	Requests  int64  `json:"requests"`
	Bad       int64  `json:"bad_responses"`
	FirstErr  string `json:"first_error,omitempty"`
	HeldForMS int64  `json:"held_for_ms"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "server address (loopback only)")
	n := flag.Int("n", 1000, "connections")
	mode := flag.String("mode", "idle", "idle | slow")
	hold := flag.Duration("hold", 30*time.Second, "how long to hold the connections")
	every := flag.Duration("byte-every", 100*time.Millisecond, "slow mode: pause between request bytes")
	dialers := flag.Int("dialers", 64, "connections opened at once")
	flag.Parse()
	if err := check(*addr, *n, *mode, *hold, *every); err != nil {
		fmt.Fprintf(os.Stderr, "holdconns: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *hold)
	defer cancel()
	s := run(ctx, *addr, *n, *mode, *every, max(1, *dialers))
	_ = json.NewEncoder(os.Stdout).Encode(s)
	if s.Opened < int64(*n) {
		os.Exit(1)
	}
}

func check(addr string, n int, mode string, hold, every time.Duration) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: only loopback addresses are allowed", addr)
	}
	switch {
	case n <= 0 || n > 60000:
		return fmt.Errorf("-n %d: want 1..60000", n)
	case mode != "idle" && mode != "slow":
		return fmt.Errorf("-mode %q: want idle or slow", mode)
	case hold <= 0 || hold > 10*time.Minute:
		return fmt.Errorf("-hold %v: want 0 < hold <= 10m", hold)
	case every <= 0:
		return fmt.Errorf("-byte-every %v: want > 0", every)
	}
	return nil
}

type counters struct {
	opened, failed, requests, bad atomic.Int64
	mu                            sync.Mutex
	first                         error
}

func (c *counters) fail(err error) {
	c.mu.Lock()
	if c.first == nil {
		c.first = err
	}
	c.mu.Unlock()
}

func run(ctx context.Context, addr string, n int, mode string, every time.Duration, dialers int) Summary {
	start := time.Now()
	var c counters
	var wg, opened sync.WaitGroup
	sem := make(chan struct{}, dialers)
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: holdconns\r\n\r\n")
	for range n {
		wg.Add(1)
		opened.Add(1)
		go func() {
			defer wg.Done()
			once := sync.OnceFunc(opened.Done)
			defer once()
			sem <- struct{}{}
			conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
			<-sem
			if err != nil {
				c.failed.Add(1)
				c.fail(err)
				return
			}
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
			defer stop()
			br := bufio.NewReaderSize(conn, 4096)
			if mode == "idle" {
				err := exchange(conn, br, req, 0)
				if err != nil {
					c.failed.Add(1)
					c.fail(err)
					return
				}
				c.opened.Add(1)
				c.requests.Add(1)
				once()
				<-ctx.Done()
				return
			}
			c.opened.Add(1)
			once()
			for ctx.Err() == nil {
				if err := exchange(conn, br, req, every); err != nil {
					if ctx.Err() == nil {
						c.bad.Add(1)
						c.fail(err)
					}
					return
				}
				c.requests.Add(1)
			}
		}()
	}
	opened.Wait()
	fmt.Printf("ready %d\n", c.opened.Load())
	wg.Wait()
	s := Summary{
		Mode: mode, Opened: c.opened.Load(), Failed: c.failed.Load(),
		Requests: c.requests.Load(), Bad: c.bad.Load(),
		HeldForMS: time.Since(start).Milliseconds(),
	}
	if c.first != nil {
		s.FirstErr = c.first.Error()
	}
	return s
}

// exchange writes req (one byte at a time, every apart, when every > 0),
// then reads one response whole.
func exchange(conn net.Conn, br *bufio.Reader, req []byte, every time.Duration) error {
	if every <= 0 {
		if _, err := conn.Write(req); err != nil {
			return fmt.Errorf("writing: %w", err)
		}
	} else {
		for i := range req {
			if _, err := conn.Write(req[i : i+1]); err != nil {
				return fmt.Errorf("writing: %w", err)
			}
			time.Sleep(every)
		}
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("reading response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
