package realtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// Two hubs over the NATS at 127.0.0.1:4222, with histories in the Redis at
// 127.0.0.1:6379.
func TestNATSBroker(t *testing.T) {
	prefix := testPrefix(t)
	subject := fmt.Sprintf("scaleout.test.%d", time.Now().UnixNano())
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() { rdb.Close() })
	newBroker := func(history bool) Broker {
		nc, err := nats.Connect("nats://127.0.0.1:4222", nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		cfg := NATSBrokerConfig{Subject: subject, HistoryPrefix: prefix}
		if history {
			cfg.History = rdb
		}
		return NewNATSBroker(nc, cfg)
	}
	a := startNode(t, Config{Broker: newBroker(true), NodeID: "a"})
	b := startNode(t, Config{Broker: newBroker(true), NodeID: "b"})

	t.Run("cross-node delivery in sequence", func(t *testing.T) {
		cb := dial(t, b.url, token(t, "u", false, "n"))
		subscribe(t, cb, "n", nil)
		// Publish from both nodes at once; node B still delivers in
		// sequence order.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range 20 {
				_, _ = b.hub.Publish(context.Background(), "n", fmt.Appendf(nil, `"b%d"`, i))
			}
		}()
		for i := range 20 {
			publish(t, a.hub, "n", fmt.Sprintf(`"a%d"`, i))
		}
		<-done
		for i := 1; i <= 40; i++ {
			if f := next(t, cb); f.Seq != uint64(i) {
				t.Fatalf("message %d has seq %d", i, f.Seq)
			}
		}
		expectNone(t, cb, 100*time.Millisecond)
	})
	t.Run("user delivery across nodes", func(t *testing.T) {
		ca := dial(t, a.url, token(t, "dana", false))
		cb := dial(t, b.url, token(t, "dana", false))
		waitFor(t, func() bool { return hasUser(a.hub, "dana") && hasUser(b.hub, "dana") })
		if err := a.hub.PublishUser(context.Background(), "dana", []byte(`1`)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*Client{ca, cb} {
			if f := next(t, c); f.User != "dana" {
				t.Fatalf("got %+v", f)
			}
			expectNone(t, c, 50*time.Millisecond)
		}
	})
	t.Run("recovery from the Redis history", func(t *testing.T) {
		tok := token(t, "u", false, "h")
		c := dial(t, a.url, tok)
		subscribe(t, c, "h", nil)
		publish(t, b.hub, "h", "1")
		f := next(t, c)
		_ = c.Close()
		publish(t, b.hub, "h", "2")
		publish(t, b.hub, "h", "3")
		c2 := dial(t, b.url, tok)
		r := subscribe(t, c2, "h", &Position{Epoch: f.Epoch, Seq: f.Seq})
		if r.Recovered == nil || !*r.Recovered {
			t.Fatalf("reply %+v", r)
		}
		for _, want := range []string{"2", "3"} {
			if f := next(t, c2); string(f.Data) != want {
				t.Fatalf("got %+v, want %s", f, want)
			}
		}
	})
	t.Run("without history: no sequence, reconnects told to resync", func(t *testing.T) {
		n := startNode(t, Config{Broker: newBroker(false)})
		c := dial(t, n.url, token(t, "u", false, "p"))
		subscribe(t, c, "p", nil)
		publish(t, n.hub, "p", "1")
		if f := next(t, c); f.Seq != 0 || string(f.Data) != "1" {
			t.Fatalf("got %+v", f)
		}
		r := subscribe(t, dial(t, n.url, token(t, "u", false, "p")), "p", &Position{Seq: 1})
		if r.Recovered == nil || *r.Recovered {
			t.Fatalf("reply %+v", r)
		}
	})
}

func hasUser(h *Hub, user string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.users[user]) > 0
}

// natsServer is a throwaway nats-server on a free port.
type natsServer struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &natsServer{t: t, port: port}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

func (s *natsServer) start() {
	s.t.Helper()
	s.cmd = exec.Command("nats-server", "-a", "127.0.0.1", "-p", fmt.Sprint(s.port))
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting nats-server: %v", err)
	}
	waitFor(s.t, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (s *natsServer) stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// A NATS outage: local delivery goes on and the outage is reported; after
// NATS returns, delivery resumes and what node B missed is recovered from
// the history in Redis.
func TestNATSOutage(t *testing.T) {
	ns := startNATS(t)
	prefix := testPrefix(t)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() { rdb.Close() })
	newBroker := func() Broker {
		nc, err := nats.Connect(ns.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return NewNATSBroker(nc, NATSBrokerConfig{History: rdb, HistoryPrefix: prefix})
	}
	a := startNode(t, Config{Broker: newBroker(), NodeID: "a"})
	b := startNode(t, Config{Broker: newBroker(), NodeID: "b"})
	ca := dial(t, a.url, token(t, "u", false, "o"))
	cb := dial(t, b.url, token(t, "u", false, "o"))
	subscribe(t, ca, "o", nil)
	subscribe(t, cb, "o", nil)
	publish(t, a.hub, "o", "1")
	next(t, ca)
	next(t, cb)

	ns.stop()
	waitFor(t, func() bool { return !a.hub.Status().BrokerUp && !b.hub.Status().BrokerUp })
	// The message gets its sequence number and history in Redis, but NATS
	// cannot carry it: node A delivers locally and reports.
	_, err := a.hub.Publish(context.Background(), "o", []byte("2"))
	if !errors.Is(err, ErrBrokerDown) {
		t.Fatalf("publish during outage: %v, want ErrBrokerDown", err)
	}
	if f := next(t, ca); string(f.Data) != "2" {
		t.Fatalf("local delivery during outage: %+v", f)
	}

	ns.start()
	waitFor(t, func() bool { return a.hub.Status().BrokerUp && b.hub.Status().BrokerUp })
	publish(t, a.hub, "o", "3")
	// Node A delivered "2" during the outage already: only "3" now, no
	// duplicate. Node B gets "2" from the history, then "3".
	for name, tc := range map[string]struct {
		c    *Client
		want []string
	}{"node A": {ca, []string{"3"}}, "node B": {cb, []string{"2", "3"}}} {
		for _, want := range tc.want {
			if f := next(t, tc.c); string(f.Data) != want {
				t.Fatalf("%s after the outage: %+v, want %s", name, f, want)
			}
		}
		expectNone(t, tc.c, 100*time.Millisecond)
	}
	if st := b.hub.Status(); st.BrokerOutages != 1 || st.Recovered == 0 || st.LostGaps != 0 {
		t.Fatalf("node B status %+v", st)
	}
}
