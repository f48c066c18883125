package main

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, url string
		rate      float64
		d         time.Duration
		conns     int
	}{
		{"not loopback", "http://10.1.2.3:80/", 10, time.Second, 1},
		{"a host name", "http://example.com:80/", 10, time.Second, 1},
		{"no port", "http://127.0.0.1/", 10, time.Second, 1},
		{"https", "https://127.0.0.1:443/", 10, time.Second, 1},
		{"zero rate", "http://127.0.0.1:80/", 0, time.Second, 1},
		{"unbounded duration", "http://127.0.0.1:80/", 10, time.Hour, 1},
		{"no connections", "http://127.0.0.1:80/", 10, time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parse(tt.url, tt.rate, tt.d, tt.conns, time.Second); err == nil {
				t.Errorf("parse(%q, %v, %v, %d) accepted it", tt.url, tt.rate, tt.d, tt.conns)
			}
		})
	}
}

// TestStallIsChargedToQueuedRequests pins the point of an open-loop
// generator: when the server stalls, the requests that were due meanwhile
// are measured from when they were due, so the stall shows in the
// percentiles instead of in one slow request.
func TestStallIsChargedToQueuedRequests(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 50 {
			time.Sleep(300 * time.Millisecond)
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	o, err := parse(srv.URL+"/", 400, time.Second, 1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, err := run(o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 400 || r.OK != 400 || r.Errors != 0 || r.Non2xx != 0 {
		t.Fatalf("sent %d ok %d errors %d non-2xx %d, want 400 400 0 0 (%s)", r.Sent, r.OK, r.Errors, r.Non2xx, r.FirstError)
	}
	// About 120 requests were due during the 300 ms stall on the one
	// connection; the slowest 1% (4 requests) waited close to 300 ms.
	if r.P99US < 200_000 {
		t.Errorf("p99 = %.0f µs after a 300 ms stall, want ≥ 200 ms (coordinated omission)", r.P99US)
	}
	if r.MaxUS < 300_000 {
		t.Errorf("max = %.0f µs, want ≥ 300 ms", r.MaxUS)
	}
}

func TestCountsNon2xx(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusBadGateway)
	}))
	defer srv.Close()
	o, err := parse(srv.URL+"/x", 100, 200*time.Millisecond, 2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, err := run(o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Non2xx != r.Sent || r.Sent != 20 {
		t.Errorf("non-2xx %d of %d sent, want 20 of 20", r.Non2xx, r.Sent)
	}
}
