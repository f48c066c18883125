package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/scaleout/scaleout/config"
	"github.com/scaleout/scaleout/gateway"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "scaleout.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "scaleout: invalid configuration:\n%v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d upstreams, %d routes)\n", *path, len(c.Upstreams), len(c.Routes))
	return 0
}

func newLogger(c *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "scaleout.yaml", "configuration file")
	watch := fs.Duration("watch", time.Second, "how often to check the file for changes (0: only SIGHUP reloads)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "scaleout: invalid configuration:\n%v\n", err)
		return 1
	}
	log := newLogger(c, stderr)
	g, err := gateway.New(c, gateway.Options{Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "scaleout: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go reloadLoop(ctx, g, *path, *watch, log)
	if err := g.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "scaleout: %v\n", err)
		return 1
	}
	return 0
}

// reloadLoop reloads on SIGHUP and when the file's content changes. A bad
// file is logged and the running configuration kept.
func reloadLoop(ctx context.Context, g *gateway.Gateway, path string, every time.Duration, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	last := fileSum(path)
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reloading", "config", path)
		case <-tick:
			sum := fileSum(path)
			if sum == nil || bytes.Equal(sum, last) {
				continue
			}
			log.Info("config file changed: reloading", "config", path)
		}
		last = fileSum(path)
		c, err := config.Load(path)
		if err == nil {
			err = g.Reload(c)
		}
		if err != nil {
			log.Error("reload failed; keeping the running configuration", "err", err)
		}
	}
}

func fileSum(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := sha256.Sum256(b)
	return s[:]
}
