package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/scaleout/scaleout/autoscale"
	"github.com/scaleout/scaleout/balancer"
)

// ErrConfig is wrapped by the errors of New about an invalid Config.
var ErrConfig = errors.New("invalid kubernetes provider config")

// ErrRunning is returned by Run when the provider already runs.
var ErrRunning = errors.New("kubernetes provider already running")

// serviceNameLabel is the label that ties an EndpointSlice to its Service.
const serviceNameLabel = "kubernetes.io/service-name"

// Config configures a Provider. Only Deployment is required.
type Config struct {
	// Namespace of the Deployment and the Service. Default "default".
	Namespace string
	// Deployment is the name of the Deployment to scale. Required.
	Deployment string
	// Service is the name of the Service whose EndpointSlices (label
	// kubernetes.io/service-name) list the Deployment's pods. Default the
	// Deployment's name.
	Service string
	// Port is the port of the endpoints to send traffic to: the name of a
	// port of the Service (as listed in its EndpointSlices), or a number,
	// used as is. Default the only port of each EndpointSlice (an
	// EndpointSlice with several ports is then an error).
	Port string
	// Scheme of the backends' URLs, http or https. Default http.
	Scheme string
	// Weight of each backend in the pool. Default 1.
	Weight int
	// Resync is how often the provider reads the Deployment's scale and
	// the EndpointSlices, and writes the scale if it differs from the
	// desired size. Scale triggers a write at once. Default 5 s.
	Resync time.Duration
	// Backoff is the wait after a failed API call; it doubles with each
	// failure in a row up to MaxBackoff and goes back to Resync after a
	// success. Default 1 s.
	Backoff time.Duration
	// MaxBackoff caps Backoff. Default 1 min (at least Backoff).
	MaxBackoff time.Duration
	// Logger receives the provider's logs. Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with its defaults filled in, or an error naming
// what is invalid.
func (c Config) withDefaults() (Config, error) {
	if c.Deployment == "" {
		return c, fmt.Errorf("%w: deployment name is empty", ErrConfig)
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.Service == "" {
		c.Service = c.Deployment
	}
	if c.Port != "" {
		if n, err := strconv.Atoi(c.Port); err == nil && (n < 1 || n > 65535) {
			return c, fmt.Errorf("%w: port %d is out of range 1-65535", ErrConfig, n)
		}
	}
	switch c.Scheme {
	case "":
		c.Scheme = "http"
	case "http", "https":
	default:
		return c, fmt.Errorf("%w: scheme %q: want http or https", ErrConfig, c.Scheme)
	}
	if c.Weight < 1 {
		c.Weight = 1
	}
	if c.Resync < 0 || c.Backoff < 0 || c.MaxBackoff < 0 {
		return c, fmt.Errorf("%w: negative resync or backoff", ErrConfig)
	}
	if c.Resync == 0 {
		c.Resync = 5 * time.Second
	}
	if c.Backoff == 0 {
		c.Backoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Minute
	}
	c.MaxBackoff = max(c.MaxBackoff, c.Backoff)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// member is a ready endpoint that the provider put into the pool.
type member struct {
	pod     string // the pod's name, or the address if unknown
	backend string // host:port, the backend's ID
	url     string
	since   time.Time
}

// Provider scales a Deployment and feeds its ready endpoints into a pool.
// It implements autoscale.Provider.
type Provider struct {
	client k8s.Interface
	pool   autoscale.Pool
	cfg    Config
	log    *slog.Logger

	running atomic.Bool
	// Nudges to Run, buffered 1: from Scale, and from the watch.
	wakeScale, wakeSlices chan struct{}

	mu       sync.Mutex
	desired  int  // asked for by Scale
	scaleSet bool // Scale has been called
	spec     int  // spec.replicas last read
	specAt   time.Time
	ready    map[string]member // by backend ID
	stopping map[string]member // removed from the pool, maybe still draining
}

var _ autoscale.Provider = (*Provider)(nil)

// New returns a provider of cfg.Deployment that talks to the cluster through
// client and adds the ready endpoints to pool. It fails on a nil client or
// pool and on an invalid cfg, naming the problem (errors wrap ErrConfig). It
// makes no API call: Run does.
func New(client k8s.Interface, pool autoscale.Pool, cfg Config) (*Provider, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if client == nil || pool == nil {
		return nil, fmt.Errorf("%w: a client and a pool are required", ErrConfig)
	}
	return &Provider{
		client:     client,
		pool:       pool,
		cfg:        cfg,
		log:        cfg.Logger.With("provider", "kubernetes", "namespace", cfg.Namespace, "deployment", cfg.Deployment),
		wakeScale:  make(chan struct{}, 1),
		wakeSlices: make(chan struct{}, 1),
		ready:      map[string]member{},
		stopping:   map[string]member{},
	}, nil
}

// Config returns the configuration with its defaults filled in.
func (p *Provider) Config() Config { return p.cfg }

// Scale sets the Deployment's desired replicas to n (clamped to
// [0, MaxInt32]). It returns at once; Run writes the scale subresource.
func (p *Provider) Scale(n int) {
	n = min(max(n, 0), math.MaxInt32)
	p.mu.Lock()
	p.desired, p.scaleSet = n, true
	p.mu.Unlock()
	nudge(p.wakeScale)
}

// nudge wakes Run through c, unless a wake-up is pending already.
func nudge(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Instances lists the ready endpoints in the pool (ready), the endpoints
// removed from the pool that are still draining there (stopping), and as
// many starting instances as the Deployment's spec.replicas exceeds the
// ready endpoints: these have IDs "<deployment>-pending-<i>", no backend,
// and Started is when spec.replicas was last seen to change.
func (p *Provider) Instances() []autoscale.Instance {
	inPool := map[string]bool{}
	for _, b := range p.pool.Backends() {
		inPool[b.ID] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]autoscale.Instance, 0, len(p.ready)+len(p.stopping))
	for _, m := range p.ready {
		out = append(out, autoscale.Instance{ID: m.pod, Backend: m.backend, URL: m.url, State: autoscale.Ready, Started: m.since})
	}
	for id, m := range p.stopping {
		if !inPool[id] {
			delete(p.stopping, id)
			continue
		}
		out = append(out, autoscale.Instance{ID: m.pod, Backend: m.backend, URL: m.url, State: autoscale.Stopping, Started: m.since})
	}
	slices.SortFunc(out, func(a, b autoscale.Instance) int {
		if a.State != b.State {
			return stateOrder(a.State) - stateOrder(b.State)
		}
		return strings.Compare(a.Backend, b.Backend)
	})
	for i := range p.spec - len(p.ready) {
		out = append(out, autoscale.Instance{
			ID:      fmt.Sprintf("%s-pending-%d", p.cfg.Deployment, i+1),
			State:   autoscale.Starting,
			Started: p.specAt,
		})
	}
	return out
}

func stateOrder(s autoscale.InstanceState) int {
	switch s {
	case autoscale.Ready:
		return 0
	case autoscale.Stopping:
		return 1
	}
	return 2
}

// Run reads the scale and the EndpointSlices at once, then every Resync,
// until ctx is done; it writes the scale at once when Scale asks for another
// size (and at each Resync while the replicas differ), and lists the
// EndpointSlices at once when a watch on them sees a change. A failed API
// call is reported as an Event (start_failed; stop_failed for a failed
// scale-down) with its error and RetryIn, and retried after an exponential
// backoff, the scale and the discovery each on its own, so that a broken
// API is never hammered (see the package doc).
//
// When ctx is done Run returns nil and leaves the Deployment and the pool as
// they are: it does not scale the Deployment to 0, because the cluster
// outlives the gateway (another gateway replica, or the next one, still
// needs the pods). It returns ErrRunning if the provider already runs.
func (p *Provider) Run(ctx context.Context, report func(autoscale.Event)) error {
	if !p.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer p.running.Store(false)
	if report == nil {
		report = func(autoscale.Event) {}
	}
	watchDone := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	go func() {
		defer close(watchDone)
		p.watchSlices(wctx)
	}()
	defer func() {
		stopWatch()
		<-watchDone
	}()
	// The scale and the EndpointSlices are two parts, each with its own
	// schedule and backoff: a Deployment that cannot be scaled (RBAC,
	// deleted) does not hold up discovery, nor the other way round.
	parts := []*part{
		{wake: p.wakeScale, sync: p.syncScale},
		{wake: p.wakeSlices, sync: p.syncEndpoints},
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		woken := -1
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-p.wakeScale:
			woken = 0
		case <-p.wakeSlices:
			woken = 1
		}
		now := time.Now()
		for i, pt := range parts {
			due := !now.Before(pt.next) || (i == woken && pt.wait == 0)
			if !due {
				continue // not yet, or backing off: a wake-up does not cut a backoff short
			}
			e, err := pt.sync(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				pt.wait, pt.next = 0, now.Add(p.cfg.Resync)
				continue
			}
			if pt.wait == 0 {
				pt.wait = p.cfg.Backoff
			} else {
				pt.wait = min(2*pt.wait, p.cfg.MaxBackoff)
			}
			pt.next = now.Add(pt.wait)
			// e.Time is left to the Controller's clock.
			e.Error, e.RetryIn = err.Error(), pt.wait.String()
			p.log.Warn("kubernetes API call failed", "reason", e.Reason, "err", e.Error, "retry_in", e.RetryIn)
			report(e)
		}
		t.Stop() // Go 1.23+ timers: no stale tick after Stop
		t.Reset(max(min(parts[0].next.Sub(now), parts[1].next.Sub(now)), 0))
	}
}

// part is one of Run's two jobs: its next run and its current backoff (0
// after a success).
type part struct {
	wake chan struct{}
	sync func(context.Context) (autoscale.Event, error)
	next time.Time
	wait time.Duration
}

// watchSlices watches the Service's EndpointSlices and nudges Run at each
// change, so that the pool follows them without waiting for Resync, until
// ctx is done. A failed or closed watch is opened again, after a backoff if
// it failed or lasted less than Backoff; its failures are not reported:
// the poll in Run reports the API's failures.
func (p *Provider) watchSlices(ctx context.Context) {
	wait := p.cfg.Backoff
	for {
		began := time.Now()
		w, err := p.client.DiscoveryV1().EndpointSlices(p.cfg.Namespace).Watch(ctx, metav1.ListOptions{
			LabelSelector: serviceNameLabel + "=" + p.cfg.Service,
		})
		if err == nil {
			nudge(p.wakeSlices) // changes between two watches
			err = p.follow(ctx, w)
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil && time.Since(began) >= p.cfg.Backoff {
			wait = p.cfg.Backoff
			continue
		}
		p.log.Debug("EndpointSlice watch ended", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, p.cfg.MaxBackoff)
	}
}

// follow nudges Run at each event of w until w ends or ctx is done.
func (p *Provider) follow(ctx context.Context, w watch.Interface) error {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil
			}
			if ev.Type == watch.Error {
				return fmt.Errorf("watching EndpointSlices: %v", ev.Object)
			}
			nudge(p.wakeSlices)
		}
	}
}

// syncScale reads the Deployment's scale and, if Scale was called and the
// replicas differ, writes them, retrying conflicts (someone else wrote the
// scale between our read and write). On failure it returns the event to
// report.
func (p *Provider) syncScale(ctx context.Context) (autoscale.Event, error) {
	deployments := p.client.AppsV1().Deployments(p.cfg.Namespace)
	p.mu.Lock()
	want, set := p.desired, p.scaleSet
	p.mu.Unlock()
	from := -1
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sc, err := deployments.GetScale(ctx, p.cfg.Deployment, metav1.GetOptions{})
		if err != nil {
			return err
		}
		from = int(sc.Spec.Replicas)
		p.setSpec(from)
		if !set || from == want {
			return nil
		}
		sc.Spec.Replicas = int32(want)
		got, err := deployments.UpdateScale(ctx, p.cfg.Deployment, sc, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		p.setSpec(int(got.Spec.Replicas))
		p.log.Info("deployment scaled", "from", from, "to", got.Spec.Replicas)
		return nil
	})
	if err == nil {
		return autoscale.Event{}, nil
	}
	e := autoscale.Event{Type: autoscale.EventStartFailed, Instance: p.cfg.Deployment, Desired: want}
	switch {
	case from < 0 || !set:
		e.Reason = fmt.Sprintf("reading the scale of deployment %s/%s", p.cfg.Namespace, p.cfg.Deployment)
		if !set {
			e.Desired = 0
		}
	default:
		if want < from {
			e.Type = autoscale.EventStopFailed
		}
		e.Reason = fmt.Sprintf("scaling deployment %s/%s from %d to %d", p.cfg.Namespace, p.cfg.Deployment, from, want)
	}
	return e, fmt.Errorf("%s: %w", e.Reason, err)
}

func (p *Provider) setSpec(n int) {
	p.mu.Lock()
	if n != p.spec || p.specAt.IsZero() {
		p.spec, p.specAt = n, time.Now()
	}
	p.mu.Unlock()
}

// syncEndpoints lists the Service's EndpointSlices and makes the pool hold
// exactly their ready endpoints: new ones are added, the ones that became
// not ready or terminating, or disappeared, are removed (drained).
func (p *Provider) syncEndpoints(ctx context.Context) (autoscale.Event, error) {
	e := autoscale.Event{
		Type:     autoscale.EventStartFailed,
		Instance: p.cfg.Deployment,
		Reason:   fmt.Sprintf("discovering the endpoints of service %s/%s", p.cfg.Namespace, p.cfg.Service),
	}
	err := p.applyEndpoints(ctx)
	if err != nil {
		return e, fmt.Errorf("%s: %w", e.Reason, err)
	}
	return e, nil
}

// applyEndpoints does syncEndpoints' work.
func (p *Provider) applyEndpoints(ctx context.Context) error {
	list, err := p.client.DiscoveryV1().EndpointSlices(p.cfg.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: serviceNameLabel + "=" + p.cfg.Service,
	})
	if err != nil {
		return fmt.Errorf("listing EndpointSlices: %w", err)
	}
	want := map[string]member{}
	var errs []error
	for i := range list.Items {
		if err := p.readySlice(&list.Items[i], want); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// A slice we cannot read says nothing about its endpoints: leave
		// the pool as it is rather than drain them.
		return errors.Join(errs...)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for id, m := range want {
		if _, ok := p.ready[id]; ok {
			continue
		}
		b, err := balancer.NewBackend(m.url, p.cfg.Weight)
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: %w", m.url, err))
			continue
		}
		if err := p.pool.Add(b); err != nil && !errors.Is(err, balancer.ErrDuplicateBackend) {
			errs = append(errs, fmt.Errorf("adding endpoint %s: %w", m.url, err))
			continue
		}
		// A duplicate is a backend already in the pool (configured
		// statically, or added by a previous Run): it is ours now.
		m.since = now
		p.ready[id] = m
		delete(p.stopping, id)
		p.log.Info("endpoint ready, added to the pool", "pod", m.pod, "backend", id)
	}
	for id, m := range p.ready {
		if _, ok := want[id]; ok {
			continue
		}
		delete(p.ready, id)
		if err := p.pool.Remove(id); err != nil {
			if !errors.Is(err, balancer.ErrUnknownBackend) {
				errs = append(errs, fmt.Errorf("removing endpoint %s: %w", id, err))
			}
			continue
		}
		p.stopping[id] = m
		p.log.Info("endpoint gone or not ready, draining it out of the pool", "pod", m.pod, "backend", id)
	}
	return errors.Join(errs...)
}

// readySlice adds the ready endpoints of s to want, by backend ID.
func (p *Provider) readySlice(s *discoveryv1.EndpointSlice, want map[string]member) error {
	port, err := p.slicePort(s)
	if err != nil {
		return err
	}
	for _, ep := range s.Endpoints {
		if !endpointReady(ep) || len(ep.Addresses) == 0 {
			continue
		}
		host := net.JoinHostPort(ep.Addresses[0], strconv.Itoa(port))
		pod := ep.Addresses[0]
		if ep.TargetRef != nil && ep.TargetRef.Name != "" {
			pod = ep.TargetRef.Name
		}
		u := (&url.URL{Scheme: p.cfg.Scheme, Host: host}).String()
		want[host] = member{pod: pod, backend: host, url: u}
	}
	return nil
}

// endpointReady reports whether ep takes new traffic: ready (unknown counts
// as ready, as the EndpointSlice API says) and not terminating.
func endpointReady(ep discoveryv1.Endpoint) bool {
	c := ep.Conditions
	if c.Terminating != nil && *c.Terminating {
		return false
	}
	return c.Ready == nil || *c.Ready
}

// slicePort returns the port of s's endpoints that the config selects.
func (p *Provider) slicePort(s *discoveryv1.EndpointSlice) (int, error) {
	if n, err := strconv.Atoi(p.cfg.Port); err == nil {
		return n, nil
	}
	var names []string
	for _, sp := range s.Ports {
		name := ""
		if sp.Name != nil {
			name = *sp.Name
		}
		names = append(names, strconv.Quote(name))
		if p.cfg.Port != "" && name == p.cfg.Port && sp.Port != nil {
			return int(*sp.Port), nil
		}
	}
	if p.cfg.Port == "" && len(s.Ports) == 1 && s.Ports[0].Port != nil {
		return int(*s.Ports[0].Port), nil
	}
	if len(s.Endpoints) == 0 {
		return 0, nil // nothing to route to anyway
	}
	if p.cfg.Port == "" {
		return 0, fmt.Errorf("EndpointSlice %s has %d ports (%v): set Port to pick one", s.Name, len(s.Ports), names)
	}
	return 0, fmt.Errorf("EndpointSlice %s has no port named %q (it has %v)", s.Name, p.cfg.Port, names)
}
