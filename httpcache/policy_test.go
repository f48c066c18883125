package httpcache

import (
	"net/http"
	"testing"
	"time"
)

func TestParseCacheControl(t *testing.T) {
	d := ParseCacheControl(`public, max-age=60, s-maxage="120"`, `no-cache="Set-Cookie, X", stale-while-revalidate=30, STALE-IF-ERROR=5, bogus`)
	if !d.Public || d.MaxAge != 60*time.Second || d.SMaxAge != 120*time.Second || !d.NoCache || !d.NoCacheFields ||
		d.StaleWhileRevalidate != 30*time.Second || d.StaleIfError != 5*time.Second || d.Private || d.NoStore {
		t.Errorf("parsed %+v", d)
	}
	if d := ParseCacheControl("max-age=abc"); d.MaxAge != 0 {
		t.Errorf("invalid max-age must mean stale (0), got %v", d.MaxAge)
	}
	if d := ParseCacheControl("max-age=99999999999999"); d.MaxAge != maxDelta*time.Second {
		t.Errorf("huge max-age not capped: %v", d.MaxAge)
	}
	if d := ParseCacheControl(""); d.MaxAge != -1 || d.SMaxAge != -1 {
		t.Errorf("absent directives must be -1: %+v", d)
	}
}

func TestStorable(t *testing.T) {
	date := time.Now().UTC().Format(http.TimeFormat)
	hdr := func(kv ...string) http.Header {
		h := http.Header{"Date": {date}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	none := ParseCacheControl()
	tests := []struct {
		name   string
		method string
		auth   bool
		status int
		cc     string
		h      http.Header
		opt    Options
		store  bool
		life   time.Duration
	}{
		{"max-age", "GET", false, 200, "max-age=60", hdr(), Options{}, true, 60 * time.Second},
		{"s-maxage wins", "GET", false, 200, "max-age=60, s-maxage=10", hdr(), Options{}, true, 10 * time.Second},
		{"expires", "GET", false, 200, "", hdr("Expires", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)), Options{}, true, time.Hour},
		{"bad expires is stale but no validators", "GET", false, 200, "", hdr("Expires", "0"), Options{}, false, 0},
		{"no freshness", "GET", false, 200, "", hdr(), Options{}, false, 0},
		{"default ttl", "GET", false, 200, "", hdr(), Options{DefaultTTL: time.Minute}, true, time.Minute},
		{"error status never on default ttl", "GET", false, 404, "", hdr(), Options{DefaultTTL: time.Minute}, false, 0},
		{"error status with explicit freshness", "GET", false, 404, "max-age=5", hdr(), Options{}, true, 5 * time.Second},
		{"500 with no freshness", "GET", false, 500, "", hdr(), Options{DefaultTTL: time.Minute}, false, 0},
		{"no-store", "GET", false, 200, "no-store, max-age=60", hdr(), Options{}, false, 0},
		{"private", "GET", false, 200, "private, max-age=60", hdr(), Options{}, false, 0},
		{"post", "POST", false, 200, "max-age=60", hdr(), Options{}, false, 0},
		{"authorization", "GET", true, 200, "max-age=60", hdr(), Options{}, false, 0},
		{"authorization public", "GET", true, 200, "public, max-age=60", hdr(), Options{}, true, 60 * time.Second},
		{"authorization s-maxage", "GET", true, 200, "s-maxage=60", hdr(), Options{}, true, 60 * time.Second},
		{"authorization must-revalidate", "GET", true, 200, "must-revalidate, max-age=60", hdr(), Options{}, true, 60 * time.Second},
		{"set-cookie", "GET", false, 200, "max-age=60", hdr("Set-Cookie", "a=b"), Options{}, false, 0},
		{"set-cookie allowed", "GET", false, 200, "max-age=60", hdr("Set-Cookie", "a=b"), Options{StoreSetCookie: true}, true, 60 * time.Second},
		{"vary star", "GET", false, 200, "max-age=60", hdr("Vary", "*"), Options{}, false, 0},
		{"no-cache stored for revalidation", "GET", false, 200, "no-cache, max-age=60", hdr("ETag", `"x"`), Options{}, true, 60 * time.Second},
		{"max-age=0 with validator", "GET", false, 200, "max-age=0", hdr("ETag", `"x"`), Options{}, true, 0},
		{"partial content", "GET", false, 206, "max-age=60", hdr(), Options{}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Storable(tt.method, none, tt.auth, tt.status, ParseCacheControl(tt.cc), tt.h, tt.opt)
			if d.Store != tt.store || (d.Store && (d.Lifetime-tt.life).Abs() > 2*time.Second) {
				t.Errorf("Storable = %+v, want store=%v life=%v", d, tt.store, tt.life)
			}
		})
	}
	if d := Storable("GET", ParseCacheControl("no-store"), false, 200, ParseCacheControl("max-age=60"), hdr(), Options{}); d.Store {
		t.Error("request no-store was stored")
	}
}

func TestAgeAndFreshness(t *testing.T) {
	now := time.Now()
	h := http.Header{"Age": {"30"}, "Date": {now.UTC().Format(http.TimeFormat)}}
	e := NewEntry(200, h, []string{"Age", "Date"}, nil, now.Add(-time.Second), now, Decision{Store: true, Lifetime: time.Minute}, ParseCacheControl("max-age=60"))
	if age := e.Age(now); age < 30*time.Second || age > 32*time.Second {
		t.Errorf("age honouring upstream Age=30 and 1s delay = %v", age)
	}
	if !e.Fresh(now.Add(20*time.Second), ParseCacheControl()) {
		t.Error("fresh entry reported stale")
	}
	if e.Fresh(now.Add(40*time.Second), ParseCacheControl()) {
		t.Error("stale entry reported fresh")
	}
	if e.Fresh(now, ParseCacheControl("max-age=10")) {
		t.Error("request max-age=10 must refuse an entry 30s old")
	}
	if e.Fresh(now, ParseCacheControl("no-cache")) {
		t.Error("request no-cache must revalidate")
	}
	if e.Get("Age") != "" {
		t.Error("Age must not be stored; it is computed")
	}
}

func TestETagMatch(t *testing.T) {
	for _, tt := range []struct {
		inm, etag string
		want      bool
	}{
		{`"a"`, `"a"`, true},
		{`W/"a"`, `"a"`, true},
		{`"b", "a"`, `W/"a"`, true},
		{`*`, `"a"`, true},
		{`"b"`, `"a"`, false},
		{`"a"`, ``, false},
	} {
		if got := ETagMatch(tt.inm, tt.etag); got != tt.want {
			t.Errorf("ETagMatch(%q, %q) = %v", tt.inm, tt.etag, got)
		}
	}
}

func TestEntryRoundTrip(t *testing.T) {
	now := time.Now()
	e := &Entry{Status: 200, Header: [][2]string{{"Content-Type", "text/plain"}, {"Etag", `"x"`}}, Body: []byte("hello"),
		RequestTime: now, ResponseTime: now, InitialAge: time.Second, Lifetime: time.Minute, StaleIfError: 5 * time.Second, MustRevalidate: true}
	b, _ := e.MarshalBinary()
	got, err := UnmarshalEntry(b)
	if err != nil || got.Status != 200 || string(got.Body) != "hello" || got.Get("Etag") != `"x"` || !got.MustRevalidate ||
		got.Lifetime != time.Minute || got.StaleIfError != 5*time.Second || !got.ResponseTime.Equal(now) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for i := 0; i < len(b); i++ {
		if _, err := UnmarshalEntry(b[:i]); err == nil {
			t.Errorf("truncated entry (%d of %d bytes) decoded", i, len(b))
		}
	}
}

func FuzzUnmarshalEntry(f *testing.F) {
	e := &Entry{Status: 200, Header: [][2]string{{"A", "b"}}, Body: []byte("x")}
	b, _ := e.MarshalBinary()
	f.Add(b)
	f.Add([]byte{kindEntry, version, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := UnmarshalEntry(data)
		if err == nil {
			if _, err := e.MarshalBinary(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{"max-age=60, public", `no-cache="a,b", s-maxage=1`, `"`, "max-age=-1", "max-stale"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := ParseCacheControl(s)
		for _, v := range []time.Duration{d.MaxAge, d.SMaxAge, d.MaxStale, d.MinFresh, d.StaleIfError, d.StaleWhileRevalidate} {
			if v < -1 || v > maxDelta*time.Second {
				t.Fatalf("%q gave duration %v", s, v)
			}
		}
	})
}
