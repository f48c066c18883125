package proxy

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestDraining checks the proxy's side of draining: a drained backend gets
// no new requests, and its streams and WebSockets keep it busy (in flight)
// until they end, so that WaitDrained and Remove wait for them.
func TestDraining(t *testing.T) {
	release := make(chan struct{})
	var drainedHits atomic.Int64
	up := websocket.Upgrader{}
	drained := backend(t, func(w http.ResponseWriter, r *http.Request) {
		drainedHits.Add(1)
		switch r.URL.Path {
		case "/ws":
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			for {
				mt, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				_ = c.WriteMessage(mt, msg)
			}
		case "/slow":
			fmt.Fprint(w, "first;")
			_ = http.NewResponseController(w).Flush()
			<-release
			fmt.Fprint(w, "last")
		}
	})
	_, other := newCountingBackend(t, 200)
	pool := testPool(t, drained.URL, other)
	addr := startProxy(t, New(Config{}), pool, ServerConfig{})
	b := pool.Backends()[0]

	// Open a WebSocket and a slow stream on the backend to drain (round
	// robin: try until each lands there).
	var ws *websocket.Conn
	for ws == nil {
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
		if err != nil {
			t.Fatalf("dial: %v %v", err, resp)
		}
		if b.Active() == 1 {
			ws = c
		} else {
			c.Close()
		}
	}
	defer ws.Close()
	streamDone := make(chan string)
	for b.Active() < 2 {
		go func() {
			resp, err := http.Get("http://" + addr + "/slow")
			if err != nil {
				streamDone <- err.Error()
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 64)
			var got []byte
			for {
				n, err := resp.Body.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			if resp.Request.URL.Path == "/slow" && len(got) > 0 && got[0] == 'f' {
				streamDone <- string(got) // the one on the drained backend
			}
		}()
		time.Sleep(100 * time.Millisecond)
	}

	if err := pool.Drain(b.ID); err != nil {
		t.Fatal(err)
	}
	before := drainedHits.Load()
	for i := range 10 {
		if code, _, _ := do(t, addr, "GET", fmt.Sprint(i), ""); code != 200 {
			t.Fatalf("GET during drain: %d", code)
		}
	}
	if n := drainedHits.Load() - before; n != 0 {
		t.Fatalf("the drained backend got %d new requests", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := pool.WaitDrained(ctx, b.ID)
	cancel()
	if err == nil {
		t.Fatal("drained while a stream and a WebSocket were open")
	}
	// The WebSocket still works while draining.
	if err := ws.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "still here" {
		t.Fatalf("WebSocket during drain: %q %v", msg, err)
	}
	close(release)
	if got := <-streamDone; got != "first;last" {
		t.Fatalf("stream during drain: %q", got)
	}
	ws.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pool.WaitDrained(ctx, b.ID); err != nil {
		t.Fatalf("not drained after the stream and the WebSocket ended: %v", err)
	}
}
