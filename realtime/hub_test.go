package realtime

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSubscribePublishMemory(t *testing.T) {
	n := startNode(t, Config{})
	alice := dial(t, n.url, token(t, "alice", true, "news", "chat:*"))
	subscribe(t, alice, "news", nil)
	subscribe(t, alice, "chat:1", nil)

	p1 := publish(t, n.hub, "news", `{"n":1}`)
	f := next(t, alice)
	if f.Type != TypeMessage || f.Channel != "news" || string(f.Data) != `{"n":1}` || f.Seq != p1.Seq || f.Epoch != p1.Epoch || p1.Seq != 1 {
		t.Fatalf("got %+v (published at %+v)", f, p1)
	}
	publish(t, n.hub, "chat:1", `"hi"`)
	if f := next(t, alice); f.Channel != "chat:1" || string(f.Data) != `"hi"` || f.Seq != 1 {
		t.Fatalf("got %+v", f)
	}

	t.Run("forbidden channel", func(t *testing.T) {
		ctx := context.Background()
		_, err := alice.Subscribe(ctx, "secret", nil)
		var re *ReplyError
		if !errors.As(err, &re) || re.Code != CodeForbidden {
			t.Fatalf("err = %v, want forbidden", err)
		}
	})
	t.Run("client publish allowed", func(t *testing.T) {
		pos, err := alice.Publish(context.Background(), "chat:1", []byte(`{"from":"alice"}`))
		if err != nil || pos.Seq != 2 {
			t.Fatalf("pos %+v err %v", pos, err)
		}
		if f := next(t, alice); string(f.Data) != `{"from":"alice"}` || f.Seq != 2 {
			t.Fatalf("got %+v", f)
		}
	})
	t.Run("client publish without right", func(t *testing.T) {
		bob := dial(t, n.url, token(t, "bob", false, "chat:*"))
		_, err := bob.Publish(context.Background(), "chat:1", []byte(`1`))
		var re *ReplyError
		if !errors.As(err, &re) || re.Code != CodeForbidden {
			t.Fatalf("err = %v, want forbidden", err)
		}
	})
	t.Run("unsubscribe stops delivery", func(t *testing.T) {
		if err := alice.Unsubscribe(context.Background(), "news"); err != nil {
			t.Fatal(err)
		}
		publish(t, n.hub, "news", `2`)
		expectNone(t, alice, 100*time.Millisecond)
	})
	t.Run("local presence", func(t *testing.T) {
		p, err := n.hub.Presence(context.Background(), "chat:1")
		if err != nil || p.Connections != 1 || p.Users["alice"] != 1 {
			t.Fatalf("presence %+v err %v", p, err)
		}
	})
}

func TestUserDeliveryAllConnectionsOnce(t *testing.T) {
	n := startNode(t, Config{})
	a1 := dial(t, n.url, token(t, "alice", false))
	a2 := dial(t, n.url, token(t, "alice", false))
	b := dial(t, n.url, token(t, "bob", false))
	waitFor(t, func() bool { return n.hub.Status().Connections == 3 })
	if err := n.hub.PublishUser(context.Background(), "alice", []byte(`{"dm":1}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{a1, a2} {
		if f := next(t, c); f.User != "alice" || string(f.Data) != `{"dm":1}` {
			t.Fatalf("got %+v", f)
		}
		expectNone(t, c, 50*time.Millisecond)
	}
	expectNone(t, b, 50*time.Millisecond)
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRecoveryFromLastSeq(t *testing.T) {
	n := startNode(t, Config{HistorySize: 10})
	tok := token(t, "alice", false, "feed")
	c := dial(t, n.url, tok)
	subscribe(t, c, "feed", nil)
	for i := 1; i <= 5; i++ {
		publish(t, n.hub, "feed", fmt.Sprint(i))
	}
	var last Position
	for i := 1; i <= 5; i++ {
		f := next(t, c)
		last = Position{Epoch: f.Epoch, Seq: f.Seq}
	}
	_ = c.Close()
	for i := 6; i <= 15; i++ {
		publish(t, n.hub, "feed", fmt.Sprint(i))
	}

	t.Run("recovers exactly the missed messages", func(t *testing.T) {
		c2 := dial(t, n.url, tok)
		r := subscribe(t, c2, "feed", &last)
		if r.Recovered == nil || !*r.Recovered || r.Seq != 15 {
			t.Fatalf("reply %+v", r)
		}
		for i := 6; i <= 15; i++ {
			f := next(t, c2)
			if f.Seq != uint64(i) || string(f.Data) != fmt.Sprint(i) {
				t.Fatalf("recovered %d: got seq %d data %s", i, f.Seq, f.Data)
			}
		}
		publish(t, n.hub, "feed", "16")
		if f := next(t, c2); f.Seq != 16 {
			t.Fatalf("live after recovery: seq %d", f.Seq)
		}
		expectNone(t, c2, 50*time.Millisecond)
	})
	t.Run("too far back must resync", func(t *testing.T) {
		c3 := dial(t, n.url, tok)
		r := subscribe(t, c3, "feed", &Position{Epoch: last.Epoch, Seq: 0})
		if r.Recovered == nil || *r.Recovered {
			t.Fatalf("reply %+v, want recovered=false", r)
		}
	})
	t.Run("other epoch must resync", func(t *testing.T) {
		c4 := dial(t, n.url, tok)
		r := subscribe(t, c4, "feed", &Position{Epoch: "other", Seq: 15})
		if r.Recovered == nil || *r.Recovered {
			t.Fatalf("reply %+v, want recovered=false", r)
		}
	})
}

func TestDrainClosesWithReconnect(t *testing.T) {
	n := startNode(t, Config{})
	c := dial(t, n.url, token(t, "alice", false, "x"))
	subscribe(t, c, "x", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.hub.Drain(ctx)
	_, err := c.Next(ctx)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseReconnect || ce.Reason != "reconnect" {
		t.Fatalf("err = %v, want close %d reconnect", err, CloseReconnect)
	}
	if _, err := Dial(ctx, n.url, token(t, "alice", false)); err == nil {
		t.Fatal("draining node accepted a new connection")
	}
}

// Two hubs sharing one MemoryBroker stand for two nodes; SetDown simulates
// the broker outage.
func TestBrokerOutage(t *testing.T) {
	mb := NewMemoryBroker()
	a := startNode(t, Config{Broker: mb})
	b := startNode(t, Config{Broker: mb})
	ca := dial(t, a.url, token(t, "u1", false, "ch"))
	cb := dial(t, b.url, token(t, "u2", false, "ch"))
	subscribe(t, ca, "ch", nil)
	subscribe(t, cb, "ch", nil)
	publish(t, a.hub, "ch", "1")
	next(t, ca)
	next(t, cb)

	t.Run("local delivery continues and the outage is reported", func(t *testing.T) {
		mb.SetDown(true, false)
		_, err := a.hub.Publish(context.Background(), "ch", []byte("2"))
		if !errors.Is(err, ErrBrokerDown) {
			t.Fatalf("err = %v, want ErrBrokerDown", err)
		}
		if f := next(t, ca); string(f.Data) != "2" || f.Seq != 0 {
			t.Fatalf("local delivery during outage: %+v", f)
		}
		st := a.hub.Status()
		if st.BrokerUp || st.BrokerOutages != 1 || st.LocalOnly != 1 {
			t.Fatalf("status %+v", st)
		}
	})
	t.Run("history survived: gap recovered on return", func(t *testing.T) {
		mb.SetDown(false, false)
		// A publish that node b missed (its subscription was down while
		// the broker stored it) is filled from history by the next one.
		publish(t, a.hub, "ch", "3")
		for _, c := range []*Client{ca, cb} {
			if f := next(t, c); string(f.Data) != "3" || f.Seq != 2 {
				t.Fatalf("after return: %+v", f)
			}
		}
	})
	t.Run("history lost: subscribers told to resync and it is counted", func(t *testing.T) {
		mb.SetDown(true, false)
		mb.SetDown(false, true)
		publish(t, a.hub, "ch", "4")
		for _, c := range []*Client{ca, cb} {
			f := next(t, c)
			if f.Type != TypeResync || f.Channel != "ch" {
				t.Fatalf("want resync, got %+v", f)
			}
			if f := next(t, c); string(f.Data) != "4" || f.Seq != 1 {
				t.Fatalf("after epoch change: %+v", f)
			}
		}
		if st := b.hub.Status(); st.LostGaps == 0 {
			t.Fatalf("loss not counted: %+v", st)
		}
	})
}

// A node whose broker subscription missed messages (as Redis pub/sub does
// while reconnecting) fills the gap from the history.
func TestGapFilledFromHistory(t *testing.T) {
	mb := NewMemoryBroker()
	n := startNode(t, Config{Broker: mb})
	c := dial(t, n.url, token(t, "u", false, "g"))
	subscribe(t, c, "g", nil)
	publish(t, n.hub, "g", "1")
	next(t, c)
	// Store two messages without delivering them to the node.
	opts := PublishOptions{HistorySize: 100}
	mb.mu.Lock()
	handlers := mb.handlers
	mb.handlers = map[int]BrokerHandler{}
	mb.mu.Unlock()
	for _, d := range []string{"2", "3"} {
		if _, err := mb.Publish(context.Background(), "g", []byte(d), opts); err != nil {
			t.Fatal(err)
		}
	}
	mb.mu.Lock()
	mb.handlers = handlers
	mb.mu.Unlock()
	publish(t, n.hub, "g", "4")
	for i := 2; i <= 4; i++ {
		if f := next(t, c); f.Seq != uint64(i) {
			t.Fatalf("got seq %d, want %d", f.Seq, i)
		}
	}
	if st := n.hub.Status(); st.Recovered != 2 {
		t.Fatalf("recovered %d, want 2", st.Recovered)
	}
}

func TestCollector(t *testing.T) {
	n := startNode(t, Config{})
	c := dial(t, n.url, token(t, "alice", false, "m"))
	subscribe(t, c, "m", nil)
	publish(t, n.hub, "m", "1")
	next(t, c)
	reg := prometheus.NewRegistry()
	if err := reg.Register(n.hub.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			switch {
			case m.Gauge != nil:
				got[name] = m.GetGauge().GetValue()
			case m.Counter != nil:
				got[name] = m.GetCounter().GetValue()
			case m.Histogram != nil:
				got[name] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for name, want := range map[string]float64{
		"scaleout_realtime_connections":                1,
		"scaleout_realtime_subscriptions":              1,
		"scaleout_realtime_broker_up":                  1,
		"scaleout_realtime_messages_total/published":   1,
		"scaleout_realtime_messages_total/received":    1,
		"scaleout_realtime_connections_total/accepted": 1,
		"scaleout_realtime_broker_lag_seconds":         1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}

// An app instance publishes through a Hub of its own on the same broker,
// without running it or serving connections.
func TestPublishOnlyHub(t *testing.T) {
	mb := NewMemoryBroker()
	n := startNode(t, Config{Broker: mb})
	c := dial(t, n.url, token(t, "alice", false, "orders"))
	subscribe(t, c, "orders", nil)
	app, err := NewHub(Config{Broker: mb})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Publish(context.Background(), "orders", []byte(`{"id":7}`)); err != nil {
		t.Fatal(err)
	}
	if err := app.PublishUser(context.Background(), "alice", []byte(`"hi"`)); err != nil {
		t.Fatal(err)
	}
	if f := next(t, c); f.Channel != "orders" || string(f.Data) != `{"id":7}` {
		t.Fatalf("got %+v", f)
	}
	if f := next(t, c); f.User != "alice" {
		t.Fatalf("got %+v", f)
	}
	t.Run("bad input", func(t *testing.T) {
		if _, err := app.Publish(context.Background(), "orders", []byte(`{x`)); !errors.Is(err, ErrBadData) {
			t.Errorf("err = %v, want ErrBadData", err)
		}
		if _, err := app.Publish(context.Background(), "", []byte(`1`)); err == nil {
			t.Error("empty channel accepted")
		}
		if err := app.PublishUser(context.Background(), "", []byte(`1`)); err == nil {
			t.Error("empty user accepted")
		}
	})
}
