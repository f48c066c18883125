package realtime

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

var testSecret = []byte("test-secret")

// node is a hub served by a fasthttp server on a free loopback port.
type node struct {
	hub   *Hub
	url   string // ws://127.0.0.1:port/ws
	admin string // http://127.0.0.1:port (PublishHandler at /api/publish)
	stop  func()
}

// startNode starts a hub with cfg (Secret defaults to testSecret) in this
// process; the test's cleanup stops it.
func startNode(t testing.TB, cfg Config) *node {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = testSecret
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h.ServeFastHTTP}
	go func() { _ = srv.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { _ = h.Run(ctx); close(ran) }()
	mux := http.NewServeMux()
	mux.Handle("POST /api/publish", h.PublishHandler())
	admin := httptest.NewServer(mux)
	n := &node{hub: h, url: "ws://" + ln.Addr().String() + "/ws", admin: admin.URL}
	stopped := false
	n.stop = func() {
		if stopped {
			return
		}
		stopped = true
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		h.Drain(dctx)
		dcancel()
		_ = ln.Close()
		cancel()
		<-ran
		admin.Close()
	}
	t.Cleanup(n.stop)
	waitBrokerUp(t, h)
	return n
}

func waitBrokerUp(t testing.TB, h *Hub) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !h.Status().BrokerUp {
		if time.Now().After(deadline) {
			t.Fatal("broker subscription not established within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// token signs a token for user allowed on channels, valid for an hour.
func token(t testing.TB, user string, publish bool, channels ...string) string {
	t.Helper()
	tok, err := SignToken(testSecret, Claims{User: user, Channels: channels, Publish: publish, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dial(t testing.TB, url, tok string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func subscribe(t testing.TB, c *Client, channel string, since *Position) ServerFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Subscribe(ctx, channel, since)
	if err != nil {
		t.Fatalf("subscribing to %q: %v", channel, err)
	}
	return r
}

// next returns the client's next message within 5 seconds.
func next(t testing.TB, c *Client) ServerFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for a message: %v", err)
	}
	return f
}

// expectNone fails if the client receives a message within d.
func expectNone(t testing.TB, c *Client, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if f, err := c.Next(ctx); err == nil {
		t.Fatalf("unexpected message %+v", f)
	}
}

func publish(t testing.TB, h *Hub, channel, data string) Position {
	t.Helper()
	pos, err := h.Publish(context.Background(), channel, []byte(data))
	if err != nil {
		t.Fatalf("publishing to %q: %v", channel, err)
	}
	return pos
}

// Separate node processes: the test binary re-executed with
// REALTIME_TEST_NODE set runs one node (see runNodeProcess).

func TestMain(m *testing.M) {
	if os.Getenv("REALTIME_TEST_NODE") != "" {
		if err := runNodeProcess(); err != nil {
			fmt.Fprintln(os.Stderr, "node:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// procNode is a node running as a child process.
type procNode struct {
	cmd   *exec.Cmd
	url   string
	admin string
}

// startProcNode runs a node process with env (KEY=VALUE) added.
func startProcNode(t testing.TB, env ...string) *procNode {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "REALTIME_TEST_NODE=1"), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &procNode{cmd: cmd}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				f := strings.Fields(rest)
				p.url, p.admin = f[0], f[1]
				ready <- nil
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
		ready <- fmt.Errorf("node exited before READY: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("node process not ready within 20s")
	}
	return p
}

// kill stops the node at once, as a crash would.
func (p *procNode) kill() { _ = p.cmd.Process.Kill() }

func postPublish(t testing.TB, admin, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(admin+"/api/publish", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
