package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsEcho is a WebSocket echo backend that also reports the request headers
// it saw in its first message.
func wsEcho(t *testing.T) string {
	up := websocket.Upgrader{}
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			http.Error(w, "no websocket here", http.StatusForbidden)
			return
		}
		c, err := up.Upgrade(w, r, http.Header{"X-Backend": {"echo"}})
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.WriteMessage(websocket.TextMessage, []byte("xff="+r.Header.Get("X-Forwarded-For")))
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	})
	return s.URL
}

func TestWebSocketPassThrough(t *testing.T) {
	pool := testPool(t, wsEcho(t))
	p := New(Config{})
	addr := startProxy(t, p, pool, ServerConfig{})

	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", http.Header{"X-Forwarded-For": {"6.6.6.6"}})
	if err != nil {
		t.Fatalf("dial through proxy: %v (%v)", err, resp)
	}
	if resp.Header.Get("X-Backend") != "echo" {
		t.Errorf("101 headers not relayed: %v", resp.Header)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, first, err := c.ReadMessage()
	if err != nil || string(first) != "xff=127.0.0.1" {
		t.Fatalf("first message %q, %v; want the backend to see X-Forwarded-For 127.0.0.1", first, err)
	}
	b := pool.Backends()[0]
	if n := b.Active(); n != 1 {
		t.Errorf("backend has %d requests in flight during the WebSocket, want 1 (draining must wait for it)", n)
	}
	for i := range 20 {
		msg := fmt.Sprintf("message %d %s", i, strings.Repeat("x", i*1000))
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != msg {
			t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
		}
	}
	if err := c.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2, 255}); err != nil {
		t.Fatal(err)
	}
	if mt, got, err := c.ReadMessage(); err != nil || mt != websocket.BinaryMessage || string(got) != "\x00\x01\x02\xff" {
		t.Fatalf("binary echo %v %q %v", mt, got, err)
	}
	_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	_, _, err = c.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("closing handshake: %v", err)
	}
	c.Close()
	assertIdle(t, pool)
	if n := p.WebSockets(); n != 0 {
		t.Errorf("%d WebSockets still relayed after close", n)
	}
}

func TestWebSocketRefusedAndClosed(t *testing.T) {
	pool := testPool(t, wsEcho(t))
	p := New(Config{})
	addr := startProxy(t, p, pool, ServerConfig{})

	t.Run("a refused upgrade is relayed as a response", func(t *testing.T) {
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/refuse", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("got %v, %v; want the backend's 403", resp, err)
		}
		assertIdle(t, pool)
	})
	t.Run("Proxy.Close ends relayed WebSockets", func(t *testing.T) {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _, _ = c.ReadMessage()
		p.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err == nil {
			t.Fatal("connection still open after Proxy.Close")
		}
		assertIdle(t, pool)
	})
	t.Run("no backend gives 503", func(t *testing.T) {
		empty := testPool(t)
		addr := startProxy(t, New(Config{}), empty, ServerConfig{})
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
		if err == nil || resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("got %v, %v; want 503 with Retry-After", resp, err)
		}
	})
}
