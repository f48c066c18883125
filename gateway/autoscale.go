package gateway

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"

	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/scaleout/scaleout/autoscale"
	kubeprovider "github.com/scaleout/scaleout/autoscale/kubernetes"
	"github.com/scaleout/scaleout/config"
)

func (g *Gateway) autoscaleConfig(a *config.Autoscale) autoscale.Config {
	c := autoscale.Config{
		Min:             a.Min,
		Max:             a.Max,
		Metric:          a.Metric,
		Target:          a.Target,
		Tolerance:       a.Tolerance,
		Interval:        a.Interval.Std(),
		ScaleDownWindow: a.ScaleDownWindow.Std(),
		Logger:          g.log,
	}
	c.ScaleUp.Percent = a.ScaleUp.Percent
	c.ScaleUp.Instances = a.ScaleUp.Instances
	c.ScaleUp.Period = a.ScaleUp.Period.Std()
	c.ScaleUp.Window = a.ScaleUp.Window.Std()
	if a.Metric == "latency_p95" {
		c.Latency = &g.latencies
	}
	return c
}

// newController builds the autoscaler of an upstream: a process provider
// that adds its instances to the upstream's pool, and the controller.
func (g *Gateway) newController(u *upstream, a *config.Autoscale) error {
	prov, err := g.newProvider(u, a)
	if err != nil {
		return fmt.Errorf("upstream %s: autoscale: %w", u.name, err)
	}
	ctl, err := autoscale.New(u.name, u.pool, prov, g.autoscaleConfig(a))
	if err != nil {
		return fmt.Errorf("upstream %s: autoscale: %w", u.name, err)
	}
	u.ctl = ctl
	u.ctlCmd = slices.Clone(a.Command)
	return nil
}

func (g *Gateway) newProvider(u *upstream, a *config.Autoscale) (autoscale.Provider, error) {
	if a.Provider == "kubernetes" {
		k := a.Kubernetes
		client, err := g.kubeClient(k.Kubeconfig)
		if err != nil {
			return nil, err
		}
		return kubeprovider.New(client, u.pool, kubeprovider.Config{
			Namespace: k.Namespace, Deployment: k.Deployment, Service: k.Service,
			Port: k.Port, Scheme: k.Scheme, Logger: g.log,
		})
	}
	env := make([]string, 0, len(a.Env))
	for k, v := range a.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return autoscale.NewProcess(u.name, u.pool, autoscale.ProcessConfig{
		Command:      a.Command,
		Env:          env,
		HealthPath:   a.HealthPath,
		DrainTimeout: u.cfg.DrainTimeout.Std(),
		StopGrace:    a.StopGrace.Std(),
		Stderr:       os.Stderr,
		Logger:       g.log,
	})
}

// kubeClient is the Kubernetes API client: from Options (tests), a
// kubeconfig file, or the in-cluster service account.
func (g *Gateway) kubeClient(kubeconfig string) (k8s.Interface, error) {
	if g.opt.KubeClient != nil {
		return g.opt.KubeClient, nil
	}
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return k8s.NewForConfig(rc)
}

// startController runs an upstream's autoscaler under the gateway's run
// context. Callers hold g.mu.
func (g *Gateway) startController(u *upstream) {
	if g.runCtx == nil || u.ctl == nil || u.ctlCancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(g.runCtx)
	u.ctlCancel = cancel
	g.controllers.Add(1)
	go func() {
		defer g.controllers.Done()
		if err := u.ctl.Run(ctx); err != nil && ctx.Err() == nil {
			g.log.Error("autoscaler stopped", "upstream", u.name, "err", err)
		}
	}()
}

// stopController stops an upstream's autoscaler; its instances are drained
// and stopped by the controller on its way out.
func (u *upstream) stopController() {
	if u.ctlCancel != nil {
		u.ctlCancel()
	}
}

func (g *Gateway) controllersList() []*autoscale.Controller {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*autoscale.Controller
	for _, u := range g.ups {
		if u.ctl != nil {
			out = append(out, u.ctl)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Upstream() < out[j].Upstream() })
	return out
}

func (g *Gateway) apiAutoscale(w http.ResponseWriter, r *http.Request) {
	out := []autoscale.Status{}
	for _, c := range g.controllersList() {
		out = append(out, c.Status())
	}
	writeJSON(w, http.StatusOK, map[string]any{"upstreams": out})
}

// reloadAutoscale applies an upstream's new autoscale block. Callers hold g.mu.
func (g *Gateway) reloadAutoscale(u *upstream, a *config.Autoscale) error {
	switch {
	case a == nil && u.ctl != nil:
		u.stopController()
		u.ctl, u.ctlCancel = nil, nil
	case a != nil && u.ctl == nil:
		if err := g.newController(u, a); err != nil {
			return err
		}
		g.startController(u)
	case a != nil:
		if !slices.Equal(a.Command, u.ctlCmd) {
			g.log.Warn("autoscale command changes take effect on restart", "upstream", u.name)
		}
		if err := u.ctl.Update(g.autoscaleConfig(a)); err != nil {
			return fmt.Errorf("upstream %s: autoscale: %w", u.name, err)
		}
	}
	return nil
}
