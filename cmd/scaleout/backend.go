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
	"strings"
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
	for path, asset := range demoAssets {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", asset.contentType)
			w.Header().Set("ETag", asset.etag)
			w.Header().Set("X-Instance", a.name)
			if r.Header.Get("If-None-Match") == asset.etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			_, _ = io.WriteString(w, asset.body)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && strings.Contains(r.Header.Get("Accept"), "text/html") {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("X-Instance", a.name)
			fmt.Fprintf(w, demoPage, a.name)
			return
		}
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

// demoPage is the built-in app's HTML page: it references assets so that
// the CDN rewriting of a gateway in front of it has something to do.
const demoPage = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>scaleout demo</title>
<link rel="stylesheet" href="/static/site.css">
<link rel="icon" href="/img/logo.svg">
</head><body>
<header><img src="/img/logo.svg" alt="scaleout" width="48" height="48"> <h1>Served by instance %s</h1></header>
<p>This page came through the scaleout gateway. Reload it: another instance answers.
Its stylesheet, script and logo point at the CDN host; view the source to see.</p>
<div class="box" style="background-image:url('/img/logo.svg')">assets offloaded</div>
<script src="/static/app.js"></script>
</body></html>
`

type demoAsset struct{ contentType, etag, body string }

var demoAssets = map[string]demoAsset{
	"/static/site.css": {"text/css; charset=utf-8", `"css1"`, `body{font-family:sans-serif;margin:2em;background:#f7f7fb}
header{display:flex;align-items:center;gap:1em}
.box{padding:2em;background-repeat:no-repeat;background-position:right;border:1px solid #ccd}
`},
	"/static/app.js": {"text/javascript; charset=utf-8", `"js1"`, `document.querySelector("h1").title = "loaded at " + new Date().toISOString();
`},
	"/img/logo.svg": {"image/svg+xml", `"svg1"`, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48"><circle cx="24" cy="24" r="20" fill="#4a6cf7"/><path d="M14 30l10-14 10 14z" fill="#fff"/></svg>
`},
}
