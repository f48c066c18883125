package httpcache

import (
	"encoding/binary"
	"errors"
	"net/http"
	"time"
)

// Entry is a stored response.
type Entry struct {
	Status int
	// Header holds the end-to-end headers, in their order.
	Header [][2]string
	Body   []byte
	// RequestTime and ResponseTime bracket the origin exchange that
	// produced (or last revalidated) the entry.
	RequestTime, ResponseTime time.Time
	// InitialAge is the corrected initial age (RFC 9111 §4.2.3).
	InitialAge time.Duration
	// Lifetime is the freshness lifetime.
	Lifetime time.Duration
	// StaleWhileRevalidate and StaleIfError are the response's windows.
	StaleWhileRevalidate, StaleIfError time.Duration
	// MustRevalidate forbids serving the entry stale (must-revalidate,
	// proxy-revalidate, s-maxage); NoCache requires revalidation always.
	MustRevalidate, NoCache bool
}

// NewEntry builds an entry from a response received at responseTime for
// a request sent at requestTime, with the lifetime Storable decided.
func NewEntry(status int, h http.Header, order []string, body []byte, requestTime, responseTime time.Time, d Decision, cc Directives) *Entry {
	e := &Entry{
		Status: status, Body: body, RequestTime: requestTime, ResponseTime: responseTime,
		Lifetime: d.Lifetime, MustRevalidate: cc.MustRevalidate || cc.ProxyRevalidate || cc.SMaxAge >= 0,
		NoCache: cc.NoCache,
	}
	e.StaleWhileRevalidate = max(cc.StaleWhileRevalidate, 0)
	e.StaleIfError = max(cc.StaleIfError, 0)
	for _, k := range order {
		if hopByHop[k] {
			continue
		}
		for _, v := range h[k] {
			e.Header = append(e.Header, [2]string{k, v})
		}
	}
	e.InitialAge = initialAge(h, requestTime, responseTime)
	return e
}

// initialAge computes corrected_initial_age (RFC 9111 §4.2.3).
func initialAge(h http.Header, requestTime, responseTime time.Time) time.Duration {
	var apparent time.Duration
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		apparent = max(responseTime.Sub(date), 0)
	}
	ageValue := seconds(h.Get("Age"))
	corrected := ageValue + responseTime.Sub(requestTime)
	return max(apparent, corrected)
}

// Get returns the first value of a stored header (canonical name).
func (e *Entry) Get(name string) string {
	for _, kv := range e.Header {
		if kv[0] == name {
			return kv[1]
		}
	}
	return ""
}

// Age is the entry's current age at now.
func (e *Entry) Age(now time.Time) time.Duration {
	return e.InitialAge + max(now.Sub(e.ResponseTime), 0)
}

// Fresh reports whether the entry is fresh at now for a request with
// directives req (max-age, min-fresh lower what the client accepts).
func (e *Entry) Fresh(now time.Time, req Directives) bool {
	if e.NoCache || req.NoCache {
		return false
	}
	age := e.Age(now)
	life := e.Lifetime
	if req.MaxAge >= 0 && req.MaxAge < life {
		life = req.MaxAge
	}
	if req.MinFresh > 0 {
		age += req.MinFresh
	}
	return age < life
}

// Staleness is how far past its lifetime the entry is at now (≤ 0: fresh).
func (e *Entry) Staleness(now time.Time) time.Duration {
	return e.Age(now) - e.Lifetime
}

// ServableStale reports whether a stale entry may be served without
// revalidation while a refresh runs (stale-while-revalidate).
func (e *Entry) ServableStale(now time.Time) bool {
	return !e.MustRevalidate && !e.NoCache && e.Staleness(now) <= e.StaleWhileRevalidate
}

// ServableOnError reports whether a stale entry may be served because the
// origin failed (stale-if-error).
func (e *Entry) ServableOnError(now time.Time) bool {
	return !e.MustRevalidate && e.Staleness(now) <= e.StaleIfError
}

// Validators reports whether the entry can be revalidated.
func (e *Entry) Validators() (etag, lastModified string) {
	return e.Get("Etag"), e.Get("Last-Modified")
}

// retention is how long the store keeps an entry: its remaining freshness
// plus what it may still serve stale or revalidate for.
func (e *Entry) retention(now time.Time) time.Duration {
	extra := max(e.StaleWhileRevalidate, e.StaleIfError)
	if et, lm := e.Validators(); et != "" || lm != "" {
		extra = max(extra, revalidateKeep)
	}
	return e.Lifetime - e.Age(now) + extra
}

// revalidateKeep is how long a stale entry with validators is kept for a
// conditional request to the origin.
const revalidateKeep = 10 * time.Minute

// Refresh applies a 304's headers to the entry and restarts its clock
// (RFC 9111 §4.3.4).
func (e *Entry) Refresh(h http.Header, order []string, requestTime, responseTime time.Time, d Decision, cc Directives) {
	for _, k := range order {
		if hopByHop[k] || k == "Content-Length" {
			continue
		}
		vs := h[k]
		kept := e.Header[:0]
		for _, kv := range e.Header {
			if kv[0] != k {
				kept = append(kept, kv)
			}
		}
		e.Header = kept
		for _, v := range vs {
			e.Header = append(e.Header, [2]string{k, v})
		}
	}
	e.RequestTime, e.ResponseTime = requestTime, responseTime
	e.InitialAge = initialAge(h, requestTime, responseTime)
	if d.Store {
		e.Lifetime = d.Lifetime
		e.MustRevalidate = cc.MustRevalidate || cc.ProxyRevalidate || cc.SMaxAge >= 0
		e.NoCache = cc.NoCache
		e.StaleWhileRevalidate = max(cc.StaleWhileRevalidate, 0)
		e.StaleIfError = max(cc.StaleIfError, 0)
	}
}

// Record kinds: a stored value is either an entry or the list of request
// headers a URL's responses vary on.
const (
	kindEntry byte = 'E'
	kindVary  byte = 'V'
	version   byte = 1
)

// ErrCorrupt is returned for a stored value that does not decode.
var ErrCorrupt = errors.New("httpcache: corrupt entry")

// MarshalBinary encodes the entry.
func (e *Entry) MarshalBinary() ([]byte, error) {
	n := 64 + len(e.Body)
	for _, kv := range e.Header {
		n += len(kv[0]) + len(kv[1]) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, kindEntry, version)
	b = binary.AppendUvarint(b, uint64(e.Status))
	b = binary.AppendVarint(b, e.RequestTime.UnixNano())
	b = binary.AppendVarint(b, e.ResponseTime.UnixNano())
	for _, d := range []time.Duration{e.InitialAge, e.Lifetime, e.StaleWhileRevalidate, e.StaleIfError} {
		b = binary.AppendVarint(b, int64(d))
	}
	var flags byte
	if e.MustRevalidate {
		flags |= 1
	}
	if e.NoCache {
		flags |= 2
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(e.Header)))
	for _, kv := range e.Header {
		b = appendString(b, kv[0])
		b = appendString(b, kv[1])
	}
	b = binary.AppendUvarint(b, uint64(len(e.Body)))
	b = append(b, e.Body...)
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads the encoding back, remembering the first error.
type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err || n > uint64(len(d.b)) {
		d.err = true
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// UnmarshalEntry decodes an entry. The body aliases b.
func UnmarshalEntry(b []byte) (*Entry, error) {
	if len(b) < 2 || b[0] != kindEntry || b[1] != version {
		return nil, ErrCorrupt
	}
	d := &decoder{b: b[2:]}
	e := &Entry{}
	e.Status = int(d.uvarint())
	e.RequestTime = time.Unix(0, d.varint())
	e.ResponseTime = time.Unix(0, d.varint())
	e.InitialAge = time.Duration(d.varint())
	e.Lifetime = time.Duration(d.varint())
	e.StaleWhileRevalidate = time.Duration(d.varint())
	e.StaleIfError = time.Duration(d.varint())
	if len(d.b) == 0 {
		return nil, ErrCorrupt
	}
	flags := d.b[0]
	d.b = d.b[1:]
	e.MustRevalidate, e.NoCache = flags&1 != 0, flags&2 != 0
	nh := d.uvarint()
	if d.err || nh > uint64(len(d.b)) {
		return nil, ErrCorrupt
	}
	e.Header = make([][2]string, 0, nh)
	for i := uint64(0); i < nh && !d.err; i++ {
		k, v := d.bytes(), d.bytes()
		e.Header = append(e.Header, [2]string{string(k), string(v)})
	}
	e.Body = d.bytes()
	if d.err || e.Status < 100 || e.Status > 999 {
		return nil, ErrCorrupt
	}
	return e, nil
}
