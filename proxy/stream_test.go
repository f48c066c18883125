package proxy

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestServerSentEventsArriveOneByOne(t *testing.T) {
	next := make(chan struct{})
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		f := http.NewResponseController(w)
		for i := range 3 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			if err := f.Flush(); err != nil {
				return
			}
			select {
			case <-next: // the client saw this event
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Second):
				return
			}
		}
	})
	pool := testPool(t, s.URL)
	addr := startProxy(t, New(Config{}), pool, ServerConfig{})
	resp, err := http.Get("http://" + addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		got := make(chan string, 1)
		go func() {
			line, _ := br.ReadString('\n')
			_, _ = br.ReadString('\n')
			got <- line
		}()
		select {
		case line := <-got:
			if want := fmt.Sprintf("data: event %d\n", i); line != want {
				t.Fatalf("event %d: got %q, want %q", i, line, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d did not arrive before the backend wrote the next one: the proxy buffers", i)
		}
		next <- struct{}{}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assertIdle(t, pool)
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestLargeBodiesAreStreamed(t *testing.T) {
	const size = 100 << 20 // 104.9 MB
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/download":
			if r.URL.Query().Get("chunked") == "" {
				w.Header().Set("Content-Length", fmt.Sprint(size))
			}
			_, _ = io.CopyN(w, zeros{}, size)
		case "/upload":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		}
	})
	pool := testPool(t, s.URL)
	addr := startProxy(t, New(Config{MaxRequestBodyBytes: -1}), pool, ServerConfig{})
	sum := sha256.New()
	_, _ = io.CopyN(sum, zeros{}, size)
	wantUpload := fmt.Sprintf("%d %x", size, sum.Sum(nil))

	measure := func(t *testing.T, f func()) {
		t.Helper()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		// Client, proxy and backend share this process: allow them all a
		// few buffers, far below the body size.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/4 {
			t.Fatalf("%d MiB allocated while moving a %d MiB body: it was buffered", alloc>>20, size>>20)
		}
	}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("download chunked=%v", chunked), func(t *testing.T) {
			measure(t, func() {
				u := "http://" + addr + "/download"
				if chunked {
					u += "?chunked=1"
				}
				resp, err := http.Get(u)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				n, err := io.Copy(io.Discard, resp.Body)
				if err != nil || n != size {
					t.Fatalf("read %d bytes, %v; want %d", n, err, size)
				}
			})
		})
	}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("upload chunked=%v", chunked), func(t *testing.T) {
			measure(t, func() {
				var body io.Reader = io.LimitReader(zeros{}, size)
				if chunked {
					body = struct{ io.Reader }{body} // hide the length
				}
				req, _ := http.NewRequest("POST", "http://"+addr+"/upload", body)
				if !chunked {
					req.ContentLength = size
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				got, _ := io.ReadAll(resp.Body)
				if string(got) != wantUpload {
					t.Fatalf("backend got %q, want %q", got, wantUpload)
				}
			})
		})
	}
	assertIdle(t, pool)
}

func TestChunkedResponseKeepsConnection(t *testing.T) {
	var conns int
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		for i := range 5 {
			fmt.Fprintf(w, "part %d;", i)
			http.NewResponseController(w).Flush() //nolint:errcheck
		}
		w.Header().Set("X-Sum", "5")
	})
	pool := testPool(t, s.URL)
	p := New(Config{})
	addr := startProxy(t, p, pool, ServerConfig{})
	for i := range 3 {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "part 0;part 1;part 2;part 3;part 4;"; string(b) != want {
			t.Fatalf("request %d: %q", i, b)
		}
	}
	assertIdle(t, pool)
	c := p.client(pool.Backends()[0]).hc
	if conns = c.ConnsCount(); conns != 1 {
		t.Errorf("%d connections to the backend after 3 sequential chunked responses, want 1 reused", conns)
	}
}

func TestStreamEdges(t *testing.T) {
	t.Run("HTTP/1.0 client gets a body of unknown length unchunked", func(t *testing.T) {
		s := backend(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "part1;")
			_ = http.NewResponseController(w).Flush()
			fmt.Fprint(w, "part2")
		})
		pool := testPool(t, s.URL)
		addr := startProxy(t, New(Config{}), pool, ServerConfig{})
		resp, body := rawExchange(t, addr, "GET / HTTP/1.0\r\nHost: a\r\n\r\n")
		if resp == nil || resp.StatusCode != 200 || body != "part1;part2" || len(resp.TransferEncoding) != 0 {
			t.Fatalf("got %v %q", resp, body)
		}
		assertIdle(t, pool)
	})
	t.Run("a client going away ends the backend request", func(t *testing.T) {
		gone := make(chan struct{})
		s := backend(t, func(w http.ResponseWriter, r *http.Request) {
			defer close(gone)
			for {
				if _, err := fmt.Fprint(w, "data: tick\n\n"); err != nil {
					return
				}
				if http.NewResponseController(w).Flush() != nil {
					return
				}
				select {
				case <-r.Context().Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
		pool := testPool(t, s.URL)
		addr := startProxy(t, New(Config{}), pool, ServerConfig{})
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		if line != "data: tick\n" {
			t.Fatalf("first line %q", line)
		}
		if n := pool.Backends()[0].Active(); n != 1 {
			t.Errorf("%d in flight while streaming, want 1 (draining must wait for the stream)", n)
		}
		resp.Body.Close()
		http.DefaultClient.CloseIdleConnections()
		select {
		case <-gone:
		case <-time.After(5 * time.Second):
			t.Fatal("the backend kept streaming after the client left")
		}
		assertIdle(t, pool)
	})
	t.Run("a backend dying mid-body truncates the response visibly", func(t *testing.T) {
		u := rawBackendClosing(t, "HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n"+strings.Repeat("x", 100000), true)
		pool := testPool(t, u)
		addr := startProxy(t, New(Config{}), pool, ServerConfig{})
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil || n >= 200000 {
			t.Fatalf("read %d bytes, err %v: want a visibly truncated body", n, err)
		}
		assertIdle(t, pool)
	})
}
