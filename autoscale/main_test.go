package autoscale

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scaleout/scaleout/balancer"
)

// The test binary doubles as the app the process provider runs, and as a
// gateway to kill: AUTOSCALE_TEST_APP chooses.
func TestMain(m *testing.M) {
	switch mode := os.Getenv("AUTOSCALE_TEST_APP"); mode {
	case "":
		os.Exit(m.Run())
	case "serve", "unhealthy", "ignore-term":
		os.Exit(testApp(mode))
	case "crash":
		fmt.Fprintln(os.Stderr, "test app: crashing on purpose")
		os.Exit(3)
	case "gateway":
		os.Exit(testGateway())
	default:
		fmt.Fprintf(os.Stderr, "unknown AUTOSCALE_TEST_APP %q\n", mode)
		os.Exit(2)
	}
}

// testApp serves / (after APP_LATENCY) and /health on 127.0.0.1:$PORT.
// With APP_CHILD=1 it starts a "sleep" child in its process group; with
// APP_BURN=1 it keeps one core busy.
func testApp(mode string) int {
	latency, _ := time.ParseDuration(os.Getenv("APP_LATENCY"))
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", os.Getenv("PORT")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "test app:", err)
		return 1
	}
	if os.Getenv("APP_CHILD") == "1" {
		if err := exec.Command("sleep", "60").Start(); err != nil {
			fmt.Fprintln(os.Stderr, "test app:", err)
			return 1
		}
	}
	if os.Getenv("APP_BURN") == "1" {
		go func() {
			for x := 0; ; x++ {
				_ = x * x
			}
		}()
	}
	// APP_WORKERS bounds the requests served at once (the rest queue), to
	// give an instance a capacity: workers / latency requests per second.
	var workers chan struct{}
	if n, _ := strconv.Atoi(os.Getenv("APP_WORKERS")); n > 0 {
		workers = make(chan struct{}, n)
	}
	id := os.Getenv("INSTANCE_ID")
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if mode == "unhealthy" {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if workers != nil {
			workers <- struct{}{}
			defer func() { <-workers }()
		}
		time.Sleep(latency)
		fmt.Fprintln(w, id)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		if mode == "ignore-term" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return 1
	}
	if mode == "ignore-term" {
		select {}
	}
	return 0
}

// testGateway runs a process provider with two instances, prints their
// PIDs once ready and waits to be killed.
func testGateway() int {
	pool, err := balancer.New("app", balancer.Config{Logger: quietLogger()}, nil)
	if err != nil {
		return 1
	}
	p, err := NewProcess("app", pool, ProcessConfig{
		Command: []string{os.Args[0]}, Env: []string{"AUTOSCALE_TEST_APP=serve", "GORACE=atexit_sleep_ms=0"}, Logger: quietLogger(),
	})
	if err != nil {
		return 1
	}
	p.Scale(2)
	go func() { _ = p.Run(context.Background(), nil) }()
	for range 300 {
		var pids []string
		for _, in := range p.Instances() {
			if in.State == Ready {
				pids = append(pids, fmt.Sprint(in.PID))
			}
		}
		if len(pids) == 2 {
			fmt.Println("PIDS " + strings.Join(pids, " "))
			select {}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 1
}
