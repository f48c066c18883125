package autoscale_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scaleout/scaleout/autoscale"
	"github.com/scaleout/scaleout/balancer"
)

// An upstream whose instances are copies of the built-in app, between 2
// and 8 of them, kept at 20 requests in flight each.
func Example() {
	pool, err := balancer.New("app", balancer.Config{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	prov, err := autoscale.NewProcess("app", pool, autoscale.ProcessConfig{
		Command: []string{self, "backend"}, // honours PORT and INSTANCE_ID
		Stderr:  os.Stderr,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctl, err := autoscale.New("app", pool, prov, autoscale.Config{
		Min: 2, Max: 8, Metric: autoscale.MetricInflight, Target: 20,
		ScaleDownWindow: 2 * time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(autoscale.NewCollector(func() []*autoscale.Controller { return []*autoscale.Controller{ctl} }))

	ctx, stop := context.WithTimeout(context.Background(), time.Second)
	defer stop()
	go pool.Run(ctx)
	// Run returns when ctx is done, once every instance has stopped.
	if err := ctl.Run(ctx); err != nil {
		log.Fatal(err)
	}
	_ = ctl.Status() // for GET /api/autoscale
}
