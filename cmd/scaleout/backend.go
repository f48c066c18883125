package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// cmdBackend runs the small built-in app that demos and tests balance over.
// PORT and INSTANCE_ID in the environment are honoured so that a process
// manager (the autoscaler) can start copies of it.
func cmdBackend(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "address to listen on (default 127.0.0.1:$PORT, or 127.0.0.1:9001)")
	name := fs.String("name", os.Getenv("INSTANCE_ID"), "instance name shown in responses (default: the listen address)")
	latency := fs.Duration("latency", 0, "artificial latency added to every page (not /health)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *listen == "" {
		*listen = "127.0.0.1:9001"
		if p := os.Getenv("PORT"); p != "" {
			*listen = net.JoinHostPort("127.0.0.1", p)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "backend: %v\n", err)
		return 1
	}
	if *name == "" {
		*name = ln.Addr().String()
	}
	app := &demoApp{name: *name, latency: *latency, started: time.Now()}
	srv := &http.Server{Handler: app.handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go exitWithParent(ctx, stop)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(stdout, "backend %s listening on http://%s\n", *name, ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "backend: %v\n", err)
		return 1
	}
	return 0
}

// exitWithParent stops the backend when the process that started it with
// SCALEOUT_PARENT_PID goes away, a second guard (after Pdeathsig) against
// orphans.
func exitWithParent(ctx context.Context, stop func()) {
	want := os.Getenv("SCALEOUT_PARENT_PID")
	if want == "" {
		return
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if fmt.Sprint(os.Getppid()) != want {
				stop()
				return
			}
		}
	}
}

// demoApp is the built-in app: a JSON page naming the instance.
type demoApp struct {
	name     string
	latency  time.Duration
	started  time.Time
	requests atomic.Int64
}

func (a *demoApp) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d := a.latency
		if q := r.URL.Query().Get("sleep"); q != "" {
			if v, err := time.ParseDuration(q); err == nil && v >= 0 && v <= 30*time.Second {
				d = v
			}
		}
		if d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		n := a.requests.Add(1)
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Instance", a.name)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"instance":   a.name,
			"method":     r.Method,
			"path":       r.URL.Path,
			"host":       r.Host,
			"request_id": r.Header.Get("X-Request-ID"),
			"forwarded":  r.Header.Get("X-Forwarded-For"),
			"served":     n,
			"uptime_s":   int(time.Since(a.started).Seconds()),
		})
	})
	return mux
}
