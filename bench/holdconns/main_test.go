package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckRejects(t *testing.T) {
	tests := []struct {
		name, addr, mode string
		n                int
		hold             time.Duration
	}{
		{"not loopback", "192.168.1.1:80", "idle", 1, time.Second},
		{"no port", "127.0.0.1", "idle", 1, time.Second},
		{"unknown mode", "127.0.0.1:80", "fast", 1, time.Second},
		{"too many", "127.0.0.1:80", "idle", 70000, time.Second},
		{"unbounded hold", "127.0.0.1:80", "idle", 1, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := check(tt.addr, tt.n, tt.mode, tt.hold, time.Millisecond); err == nil {
				t.Errorf("check accepted %+v", tt)
			}
		})
	}
}

func TestHoldsConnections(t *testing.T) {
	tests := []struct {
		mode      string
		n         int
		wantConns int64
	}{
		{"idle", 30, 30},
		{"slow", 5, 5},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			var open atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte("hello"))
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				switch s {
				case http.StateNew:
					open.Add(1)
				case http.StateClosed, http.StateHijacked:
					open.Add(-1)
				}
			}
			srv.Start()
			defer srv.Close()
			addr := strings.TrimPrefix(srv.URL, "http://")
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			done := make(chan Summary, 1)
			go func() { done <- run(ctx, addr, tt.n, tt.mode, time.Millisecond, 8) }()
			time.Sleep(time.Second)
			if got := open.Load(); got != tt.wantConns {
				t.Errorf("server sees %d open connections while held, want %d", got, tt.wantConns)
			}
			s := <-done
			if s.Opened != int64(tt.n) || s.Failed != 0 || s.Bad != 0 {
				t.Errorf("summary %+v, want %d opened and no failures", s, tt.n)
			}
			if s.Requests < int64(tt.n) {
				t.Errorf("%d requests answered, want at least one per connection (%d)", s.Requests, tt.n)
			}
		})
	}
}
