package realtime

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestRefusedTokens(t *testing.T) {
	n := startNode(t, Config{})
	expired, _ := SignToken(testSecret, Claims{User: "a", Expires: time.Now().Add(-time.Minute)})
	forged, _ := SignToken([]byte("guess"), Claims{User: "a", Expires: time.Now().Add(time.Minute)})
	tests := []struct {
		name   string
		token  string
		code   int
		reason string
	}{
		{"missing", "", CloseUnauthorized, "token required"},
		{"forged", forged, CloseUnauthorized, "invalid token signature"},
		{"expired", expired, CloseTokenExpired, "token expired"},
		{"malformed", "not-a-token", CloseUnauthorized, "malformed token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := Dial(ctx, n.url, tt.token)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Next(ctx)
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != tt.code || !strings.Contains(ce.Reason, tt.reason) {
				t.Fatalf("err = %v, want close %d with %q", err, tt.code, tt.reason)
			}
		})
	}
	t.Run("anonymous allowed where configured", func(t *testing.T) {
		an := startNode(t, Config{AllowAnonymous: true, AnonymousChannels: []string{"public"}})
		c := dial(t, an.url, "")
		subscribe(t, c, "public", nil)
		if _, err := c.Subscribe(context.Background(), "private", nil); err == nil {
			t.Fatal("anonymous subscribed to a channel outside AnonymousChannels")
		}
		if _, err := c.Publish(context.Background(), "public", []byte("1")); err == nil {
			t.Fatal("anonymous published")
		}
	})
	t.Run("not an upgrade", func(t *testing.T) {
		resp, err := http.Get(strings.Replace(n.url, "ws://", "http://", 1))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
}

// rawConn is a hand-driven WebSocket client for sending bad frames.
type rawConn struct {
	net.Conn
	r io.Reader
}

func dialRaw(t *testing.T, url, tok string) *rawConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := ws.Dialer{}.Dial(ctx, url+"?token="+tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc := &rawConn{Conn: conn, r: conn}
	if br != nil {
		rc.r = io.MultiReader(br, conn)
	}
	return rc
}

// readUntilClose reads frames until a close frame and returns its code and
// reason, and the text frames before it.
func (rc *rawConn) readUntilClose(t *testing.T) (int, string, []string) {
	t.Helper()
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var texts []string
	for {
		f, err := ws.ReadFrame(rc.r)
		if err != nil {
			t.Fatalf("reading until close: %v (after %d text frames)", err, len(texts))
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			return int(code), reason, texts
		case ws.OpText:
			texts = append(texts, string(f.Payload))
		}
	}
}

func (rc *rawConn) readText(t *testing.T) string {
	t.Helper()
	_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := ws.ReadFrame(rc.r)
		if err != nil {
			t.Fatal(err)
		}
		if f.Header.OpCode == ws.OpText {
			return string(f.Payload)
		}
	}
}

func TestBadFrames(t *testing.T) {
	n := startNode(t, Config{MaxMessageSize: 1024})
	tok := token(t, "alice", true, "*")
	masked := func(f ws.Frame) []byte { return ws.MustCompileFrame(ws.MaskFrame(f)) }
	closes := []struct {
		name  string
		frame []byte
		code  int
	}{
		{"unmasked frame", ws.MustCompileFrame(ws.NewTextFrame([]byte(`{"op":"subscribe","channel":"a"}`))), CloseProtocolError},
		{"binary message", masked(ws.NewBinaryFrame([]byte{1, 2, 3})), CloseUnsupported},
		{"too big", masked(ws.NewTextFrame([]byte(`"` + strings.Repeat("x", 2000) + `"`))), CloseTooBig},
		{"invalid UTF-8", masked(ws.NewTextFrame([]byte{'"', 0xff, 0xfe, '"'})), CloseBadUTF8},
		{"reserved bits", masked(ws.Frame{Header: ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false), OpCode: ws.OpText, Length: 2}, Payload: []byte("{}")}), CloseProtocolError},
		{"continuation without start", masked(ws.NewFrame(ws.OpContinuation, true, []byte("{}"))), CloseProtocolError},
		{"long ping", masked(ws.NewPingFrame(make([]byte, 126))), CloseProtocolError},
	}
	for _, tt := range closes {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialRaw(t, n.url, tok)
			if _, err := rc.Write(tt.frame); err != nil {
				t.Fatal(err)
			}
			if code, reason, _ := rc.readUntilClose(t); code != tt.code || reason == "" {
				t.Fatalf("close %d %q, want %d with a reason", code, reason, tt.code)
			}
		})
	}

	replies := []struct {
		name string
		msg  string
		want string
	}{
		{"not JSON", `hello`, `"code":"bad_request"`},
		{"unknown op", `{"id":7,"op":"delete","channel":"a"}`, `"id":7,"error":{"code":"bad_request","message":"bad frame: unknown op \"delete\""`},
		{"missing channel", `{"id":8,"op":"subscribe"}`, `empty channel name`},
		{"reserved channel", `{"id":9,"op":"subscribe","channel":"$u:bob"}`, `reserved`},
		{"publish without data", `{"id":10,"op":"publish","channel":"a"}`, `publish needs data`},
		{"unknown field", `{"id":11,"op":"subscribe","channel":"a","x":1}`, `unknown field`},
	}
	rc := dialRaw(t, n.url, tok)
	for _, tt := range replies {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := rc.Write(masked(ws.NewTextFrame([]byte(tt.msg)))); err != nil {
				t.Fatal(err)
			}
			if got := rc.readText(t); !strings.Contains(got, tt.want) {
				t.Fatalf("reply %s, want it to contain %s", got, tt.want)
			}
		})
	}
	t.Run("connection still works after bad messages", func(t *testing.T) {
		_, _ = rc.Write(masked(ws.NewTextFrame([]byte(`{"id":20,"op":"subscribe","channel":"a"}`))))
		if got := rc.readText(t); got != `{"type":"reply","id":20,"channel":"a"}` {
			t.Fatalf("reply %s", got)
		}
	})
	t.Run("fragmented message is assembled", func(t *testing.T) {
		_, _ = rc.Write(masked(ws.NewFrame(ws.OpText, false, []byte(`{"id":21,"op":"subscr`))))
		_, _ = rc.Write(masked(ws.NewFrame(ws.OpContinuation, true, []byte(`ibe","channel":"b"}`))))
		if got := rc.readText(t); got != `{"type":"reply","id":21,"channel":"b"}` {
			t.Fatalf("reply %s", got)
		}
	})
	t.Run("ping answered with pong", func(t *testing.T) {
		_, _ = rc.Write(masked(ws.NewPingFrame([]byte("p1"))))
		_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := ws.ReadFrame(bufio.NewReader(rc.r))
		if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "p1" {
			t.Fatalf("frame %+v err %v", f.Header, err)
		}
	})
}

func TestDeadConnectionClosed(t *testing.T) {
	n := startNode(t, Config{PingInterval: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond})
	rc := dialRaw(t, n.url, token(t, "alice", false))
	waitFor(t, func() bool { return n.hub.Status().Connections == 1 })
	// rc never answers pings; the hub must close it and forget it.
	waitFor(t, func() bool { return n.hub.Status().Connections == 0 })
	if st := n.hub.Status(); st.DeadConnections != 1 {
		t.Fatalf("status %+v", st)
	}
	if code, _, _ := rc.readUntilClose(t); code != CloseNoPong {
		t.Fatalf("close code %d, want %d", code, CloseNoPong)
	}
	t.Run("a client answering pings stays", func(t *testing.T) {
		// Silent for 550ms means dead; the client stays 1.5s by answering
		// the pings.
		n2 := startNode(t, Config{PingInterval: 50 * time.Millisecond, PongTimeout: 500 * time.Millisecond})
		c := dial(t, n2.url, token(t, "bob", false))
		time.Sleep(1500 * time.Millisecond)
		if st := n2.hub.Status(); st.Connections != 1 || st.DeadConnections != 0 {
			t.Fatalf("status %+v", st)
		}
		_ = c
	})
}

func maskedText(s string) []byte {
	return ws.MustCompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(s))))
}
