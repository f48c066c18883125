// Command openloop is an open-loop HTTP/1.1 load generator: it sends GET
// requests at a fixed rate over a fixed set of keep-alive connections and
// reports latency percentiles free of coordinated omission.
//
//	openloop -url http://127.0.0.1:8080/ -rate 20000 -duration 10s -conns 64
//
// Request i is due at start + i/rate. Its latency is measured from that
// intended send time, not from when a connection became free, so a server
// that stalls is charged for every request that queued behind the stall
// (a closed-loop tool such as wrk would simply send fewer requests then).
// The load is bounded: rate × duration requests at most, and the run stops
// after duration + timeout whatever happens. Only loopback targets are
// accepted. The result is one JSON object on stdout.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Result is what one run prints, as JSON. Latencies are in microseconds.
type Result struct {
	Rate        float64 `json:"rate"`
	DurationS   float64 `json:"duration_s"`
	Sent        int     `json:"sent"`
	OK          int     `json:"ok"`
	Errors      int     `json:"errors"`
	Non2xx      int     `json:"non_2xx"`
	AchievedRPS float64 `json:"achieved_rps"`
	MeanUS      float64 `json:"mean_us"`
	P50US       float64 `json:"p50_us"`
	P90US       float64 `json:"p90_us"`
	P99US       float64 `json:"p99_us"`
	P999US      float64 `json:"p999_us"`
	MaxUS       float64 `json:"max_us"`
	FirstError  string  `json:"first_error,omitempty"`
}

type options struct {
	target   *url.URL
	rate     float64
	duration time.Duration
	conns    int
	timeout  time.Duration
}

func main() {
	raw := flag.String("url", "", "target URL, http://127.0.0.1:PORT/PATH (loopback only)")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	conns := flag.Int("conns", 64, "keep-alive connections")
	timeout := flag.Duration("timeout", 5*time.Second, "per-request timeout")
	flag.Parse()
	o, err := parse(*raw, *rate, *duration, *conns, *timeout)
	if err == nil {
		var r Result
		r, err = run(o)
		if err == nil {
			err = json.NewEncoder(os.Stdout).Encode(r)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "openloop: %v\n", err)
		os.Exit(1)
	}
}

func parse(raw string, rate float64, d time.Duration, conns int, timeout time.Duration) (options, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Port() == "" {
		return options{}, fmt.Errorf("-url %q: want http://127.0.0.1:PORT/PATH", raw)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return options{}, fmt.Errorf("-url %q: only loopback addresses are allowed", raw)
	}
	switch {
	case rate <= 0 || rate > 1e6:
		return options{}, fmt.Errorf("-rate %v: want 0 < rate <= 1000000", rate)
	case d <= 0 || d > 10*time.Minute:
		return options{}, fmt.Errorf("-duration %v: want 0 < duration <= 10m", d)
	case conns <= 0 || conns > 10000:
		return options{}, fmt.Errorf("-conns %d: want 1..10000", conns)
	case timeout <= 0:
		return options{}, fmt.Errorf("-timeout %v: want > 0", timeout)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return options{target: u, rate: rate, duration: d, conns: conns, timeout: timeout}, nil
}

// worker owns one keep-alive connection.
type worker struct {
	o    options
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	req  fasthttp.Request
	resp fasthttp.Response

	lat     []time.Duration
	errs    int
	non2xx  int
	firstEr error
}

func (w *worker) do(deadline time.Time) error {
	if w.conn == nil {
		c, err := net.DialTimeout("tcp", w.o.target.Host, w.o.timeout)
		if err != nil {
			return fmt.Errorf("dialing: %w", err)
		}
		w.conn = c
		w.br.Reset(c)
		w.bw.Reset(c)
	}
	_ = w.conn.SetDeadline(deadline)
	if err := w.req.Write(w.bw); err != nil {
		return w.fail(fmt.Errorf("writing request: %w", err))
	}
	if err := w.bw.Flush(); err != nil {
		return w.fail(fmt.Errorf("writing request: %w", err))
	}
	w.resp.Reset()
	if err := w.resp.Read(w.br); err != nil {
		return w.fail(fmt.Errorf("reading response: %w", err))
	}
	if c := w.resp.StatusCode(); c < 200 || c > 299 {
		w.non2xx++
	}
	if w.resp.ConnectionClose() {
		w.close()
	}
	return nil
}

func (w *worker) fail(err error) error {
	w.close()
	return err
}

func (w *worker) close() {
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
}

func run(o options) (Result, error) {
	total := int(o.rate * o.duration.Seconds())
	if total < 1 {
		return Result{}, errors.New("rate × duration is less than one request")
	}
	interval := float64(time.Second) / o.rate
	due := make(chan time.Time, 4096)
	hardStop := time.Now().Add(o.duration + o.timeout + time.Second)

	workers := make([]*worker, o.conns)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{
			o:   o,
			br:  bufio.NewReaderSize(nil, 16<<10),
			bw:  bufio.NewWriterSize(nil, 4<<10),
			lat: make([]time.Duration, 0, total/o.conns+16),
		}
		w.req.SetRequestURI(o.target.RequestURI())
		w.req.Header.SetHost(o.target.Host)
		w.req.Header.SetMethod(fasthttp.MethodGet)
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.close()
			for intended := range due {
				if time.Now().After(hardStop) {
					w.errs++
					continue
				}
				dl := time.Now().Add(o.timeout)
				if err := w.do(dl); err != nil {
					w.errs++
					if w.firstEr == nil {
						w.firstEr = err
					}
					continue
				}
				w.lat = append(w.lat, time.Since(intended))
			}
		}()
	}

	start := time.Now()
	for i := 0; i < total; {
		now := time.Since(start)
		for i < total && time.Duration(float64(i)*interval) <= now {
			due <- start.Add(time.Duration(float64(i) * interval))
			i++
		}
		if i < total {
			next := time.Duration(float64(i) * interval)
			if wait := next - time.Since(start); wait > 0 {
				time.Sleep(wait)
			}
		}
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)

	r := Result{Rate: o.rate, DurationS: elapsed.Seconds(), Sent: total}
	var all []time.Duration
	for _, w := range workers {
		all = append(all, w.lat...)
		r.Errors += w.errs
		r.Non2xx += w.non2xx
		if r.FirstError == "" && w.firstEr != nil {
			r.FirstError = w.firstEr.Error()
		}
	}
	r.OK = len(all)
	r.AchievedRPS = float64(r.OK) / elapsed.Seconds()
	if len(all) == 0 {
		return r, nil
	}
	slices.Sort(all)
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	pct := func(p float64) float64 {
		i := int(p / 100 * float64(len(all)))
		if i >= len(all) {
			i = len(all) - 1
		}
		return us(all[i])
	}
	r.MeanUS = us(sum) / float64(len(all))
	r.P50US, r.P90US, r.P99US, r.P999US = pct(50), pct(90), pct(99), pct(99.9)
	r.MaxUS = us(all[len(all)-1])
	return r, nil
}
