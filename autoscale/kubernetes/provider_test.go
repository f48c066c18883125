package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/scaleout/scaleout/autoscale"
	"github.com/scaleout/scaleout/balancer"
)

// These tests run against client-go's fake clientset: no cluster (nor
// envtest's API server) can run here. The fake has no scale subresource,
// so cluster emulates it on top of the fake's object tracker, with
// resource versions and conflicts as the API server has them.

const ns, depName = "shop", "web"

var deploymentsGVR = appsv1.SchemeGroupVersion.WithResource("deployments")

// cluster is a fake clientset with a Deployment web in namespace shop whose
// scale subresource works.
type cluster struct {
	client *fake.Clientset

	mu        sync.Mutex
	rv        int   // resource version of the scale
	conflicts int   // the next UpdateScale calls to fail with a conflict
	updates   int   // UpdateScale calls, failed ones included
	fail      error // every API call fails with it when set
}

func newCluster(t testing.TB, replicas int32) *cluster {
	t.Helper()
	c := &cluster{rv: 1}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: depName, Namespace: ns},
		Spec:       appsv1.DeploymentSpec{Replicas: &replicas},
	}
	c.client = fake.NewClientset(dep)
	c.client.PrependReactor("get", "deployments", c.getScale)
	c.client.PrependReactor("update", "deployments", c.updateScale)
	c.client.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.fail != nil, nil, c.fail
	})
	return c
}

func (c *cluster) deployment() (*appsv1.Deployment, error) {
	obj, err := c.client.Tracker().Get(deploymentsGVR, ns, depName)
	if err != nil {
		return nil, err
	}
	return obj.(*appsv1.Deployment), nil
}

func (c *cluster) getScale(a k8stesting.Action) (bool, runtime.Object, error) {
	if a.GetSubresource() != "scale" {
		return false, nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.deployment()
	if err != nil {
		return true, nil, err
	}
	return true, &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: depName, Namespace: ns, ResourceVersion: strconv.Itoa(c.rv)},
		Spec:       autoscalingv1.ScaleSpec{Replicas: *d.Spec.Replicas},
	}, nil
}

func (c *cluster) updateScale(a k8stesting.Action) (bool, runtime.Object, error) {
	if a.GetSubresource() != "scale" {
		return false, nil, nil
	}
	sc := a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updates++
	if c.conflicts > 0 {
		c.conflicts--
		c.rv++ // someone else wrote in between
	}
	if sc.ResourceVersion != strconv.Itoa(c.rv) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, depName,
			errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	}
	if err := c.setReplicasLocked(sc.Spec.Replicas); err != nil {
		return true, nil, err
	}
	out := sc.DeepCopy()
	out.ResourceVersion = strconv.Itoa(c.rv)
	return true, out, nil
}

// setReplicasLocked writes the Deployment's replicas as the API server
// would, c.mu held.
func (c *cluster) setReplicasLocked(n int32) error {
	d, err := c.deployment()
	if err != nil {
		return err
	}
	d = d.DeepCopy()
	d.Spec.Replicas = &n
	c.rv++
	return c.client.Tracker().Update(deploymentsGVR, d, ns)
}

// setReplicas is someone else (kubectl scale) writing the replicas.
func (c *cluster) setReplicas(t *testing.T, n int32) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.setReplicasLocked(n); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) replicas(t *testing.T) int {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := c.deployment()
	if err != nil {
		t.Fatal(err)
	}
	return int(*d.Spec.Replicas)
}

func (c *cluster) setFail(err error) {
	c.mu.Lock()
	c.fail = err
	c.mu.Unlock()
}

// ep describes one endpoint of a slice.
type ep struct {
	ip                 string
	ready, terminating *bool // nil: unset
}

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

// slice builds an EndpointSlice of service svc with one port named "http"
// on 8080 and one named "metrics" on 9090.
func slice(name, svc string, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{serviceNameLabel: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: new("http"), Port: new(int32(8080))},
			{Name: new("metrics"), Port: new(int32(9090))},
		},
	}
	for i, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Terminating: e.terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("%s-%d", name, i)},
		})
	}
	return s
}

func (c *cluster) apply(t *testing.T, s *discoveryv1.EndpointSlice) {
	t.Helper()
	api := c.client.DiscoveryV1().EndpointSlices(ns)
	if _, err := api.Update(context.Background(), s, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
		_, err = api.Create(context.Background(), s, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) deleteSlice(t *testing.T, name string) {
	t.Helper()
	if err := c.client.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func newPool(t *testing.T) *balancer.Pool {
	t.Helper()
	pool, err := balancer.New("web", balancer.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

func poolIDs(pool *balancer.Pool) []string {
	var ids []string
	for _, b := range pool.Backends() {
		if b.State() != balancer.Draining {
			ids = append(ids, b.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// eventually fails t if cond does not hold within 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// events collects reported events.
type events struct {
	mu  sync.Mutex
	all []autoscale.Event
}

func (e *events) report(ev autoscale.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) list() []autoscale.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.all)
}

// start runs p until the test ends and returns the events it reports.
func start(t *testing.T, p *Provider) *events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ev := &events{}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ev.report) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ev
}

func newProvider(t *testing.T, c *cluster, pool autoscale.Pool, cfg Config) *Provider {
	t.Helper()
	cfg.Namespace, cfg.Deployment = ns, depName
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Millisecond
	}
	p, err := New(c.client, pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNew(t *testing.T) {
	c := newCluster(t, 1)
	pool := newPool(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for success
	}{
		{"defaults", Config{Deployment: "web"}, ""},
		{"no deployment", Config{}, "deployment name is empty"},
		{"bad scheme", Config{Deployment: "web", Scheme: "ftp"}, `scheme "ftp"`},
		{"port out of range", Config{Deployment: "web", Port: "70000"}, "port 70000 is out of range"},
		{"negative resync", Config{Deployment: "web", Resync: -1}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(c.client, pool, tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				got := p.Config()
				if got.Namespace != "default" || got.Service != "web" || got.Scheme != "http" || got.Resync != 5*time.Second ||
					got.Backoff != time.Second || got.MaxBackoff != time.Minute || got.Weight != 1 {
					t.Fatalf("defaults: %+v", got)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrConfig naming %q", err, tc.want)
			}
		})
	}
	t.Run("nil client", func(t *testing.T) {
		if _, err := New(nil, pool, Config{Deployment: "web"}); !errors.Is(err, ErrConfig) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestScale(t *testing.T) {
	c := newCluster(t, 3)
	p := newProvider(t, c, newPool(t), Config{})
	ev := start(t, p)

	// Before Scale the provider only reads the replicas.
	eventually(t, "the scale read", func() bool { return len(p.Instances()) == 3 })
	if got := c.replicas(t); got != 3 {
		t.Fatalf("replicas = %d before any Scale, want 3", got)
	}
	for _, n := range []int{5, 2, 0, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p.Scale(n)
			eventually(t, fmt.Sprintf("replicas %d", n), func() bool { return c.replicas(t) == n })
		})
	}
	t.Run("someone else scales", func(t *testing.T) {
		c.setReplicas(t, 9)
		eventually(t, "replicas back to 4", func() bool { return c.replicas(t) == 4 })
	})
	if e := ev.list(); len(e) != 0 {
		t.Fatalf("events: %+v", e)
	}
}

func TestScaleConflictRetry(t *testing.T) {
	c := newCluster(t, 1)
	p := newProvider(t, c, newPool(t), Config{Resync: time.Hour})
	ev := start(t, p)
	eventually(t, "the first read", func() bool { return len(p.Instances()) == 1 })

	c.mu.Lock()
	c.conflicts = 2
	c.mu.Unlock()
	p.Scale(6)
	// Resync is an hour: only the retry on conflict can get it there.
	eventually(t, "replicas 6", func() bool { return c.replicas(t) == 6 })
	c.mu.Lock()
	updates := c.updates
	c.mu.Unlock()
	if updates != 3 {
		t.Errorf("UpdateScale calls = %d, want 3 (two conflicts, then success)", updates)
	}
	if e := ev.list(); len(e) != 0 {
		t.Fatalf("a conflict that a retry solved was reported: %+v", e)
	}
}

func TestDiscovery(t *testing.T) {
	c := newCluster(t, 3)
	pool := newPool(t)
	p := newProvider(t, c, pool, Config{Port: "http"})
	start(t, p)

	steps := []struct {
		name   string
		change func(t *testing.T)
		want   []string
	}{
		{"two ready, one not ready, one terminating, another service", func(t *testing.T) {
			c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: yes()}, ep{ip: "10.0.0.2"},
				ep{ip: "10.0.0.3", ready: no()}, ep{ip: "10.0.0.4", ready: yes(), terminating: yes()}))
			c.apply(t, slice("other-a", "other", ep{ip: "10.0.9.9", ready: yes()}))
		}, []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{"a second slice", func(t *testing.T) {
			c.apply(t, slice("web-b", "web", ep{ip: "10.0.1.1", ready: yes()}))
		}, []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.1.1:8080"}},
		{"becomes ready, one not ready", func(t *testing.T) {
			c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: no()}, ep{ip: "10.0.0.2"},
				ep{ip: "10.0.0.3", ready: yes()}))
		}, []string{"10.0.0.2:8080", "10.0.0.3:8080", "10.0.1.1:8080"}},
		{"terminating", func(t *testing.T) {
			c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.2", ready: no(), terminating: yes()}, ep{ip: "10.0.0.3", ready: yes()}))
		}, []string{"10.0.0.3:8080", "10.0.1.1:8080"}},
		{"slice removed", func(t *testing.T) { c.deleteSlice(t, "web-b") }, []string{"10.0.0.3:8080"}},
		{"all gone", func(t *testing.T) { c.deleteSlice(t, "web-a") }, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.change(t)
			eventually(t, fmt.Sprintf("pool %v", st.want), func() bool { return slices.Equal(poolIDs(pool), st.want) })
			// Instances lists them as ready, the rest of the 3
			// replicas as starting.
			eventually(t, "instances", func() bool {
				var ready []string
				starting := 0
				for _, in := range p.Instances() {
					switch in.State {
					case autoscale.Ready:
						ready = append(ready, in.Backend)
						if in.URL != "http://"+in.Backend {
							t.Errorf("URL %q of %s", in.URL, in.Backend)
						}
					case autoscale.Starting:
						starting++
					}
				}
				slices.Sort(ready)
				return slices.Equal(ready, st.want) && starting == max(0, 3-len(st.want))
			})
		})
	}
	// The removed backends were drained: none is left in the pool.
	eventually(t, "drained backends gone", func() bool { return len(pool.Backends()) == 0 })
	for _, in := range p.Instances() {
		if in.State == autoscale.Stopping {
			t.Errorf("still stopping: %+v", in)
		}
	}
}

func TestDiscoveryPorts(t *testing.T) {
	for _, tc := range []struct {
		name, port string
		want       []string
		err        string
	}{
		{"by name", "metrics", []string{"10.0.0.1:9090"}, ""},
		{"by number", "7000", []string{"10.0.0.1:7000"}, ""},
		{"unknown name", "grpc", nil, `no port named "grpc"`},
		{"several ports, none chosen", "", nil, "set Port to pick one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1)
			pool := newPool(t)
			p := newProvider(t, c, pool, Config{Port: tc.port, Backoff: time.Hour})
			c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: yes()}))
			ev := start(t, p)
			if tc.err == "" {
				eventually(t, "pool", func() bool { return slices.Equal(poolIDs(pool), tc.want) })
				return
			}
			eventually(t, "an event", func() bool { return len(ev.list()) > 0 })
			e := ev.list()[0]
			if e.Type != autoscale.EventStartFailed || !strings.Contains(e.Error, tc.err) || e.RetryIn != "1h0m0s" {
				t.Fatalf("event %+v, want start_failed naming %q", e, tc.err)
			}
			if ids := poolIDs(pool); len(ids) != 0 {
				t.Fatalf("pool %v", ids)
			}
		})
	}
}

func TestAPIErrorsBackoff(t *testing.T) {
	c := newCluster(t, 1)
	pool := newPool(t)
	c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: yes()}))
	c.setFail(apierrors.NewServiceUnavailable("etcd is down"))
	p := newProvider(t, c, pool, Config{Port: "http", Resync: time.Millisecond, Backoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
	ev := start(t, p)
	p.Scale(3)

	// Each failed round reports the scale and the EndpointSlices: 2 events.
	eventually(t, "five failed rounds", func() bool { return len(ev.list()) >= 10 })
	started := time.Now()
	for range 50 {
		p.Scale(3) // must not cut the backoff short
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(started)
	c.setFail(nil)
	eventually(t, "recovery", func() bool { return c.replicas(t) == 3 && len(poolIDs(pool)) == 1 })

	got := ev.list()
	var retry []string
	for i, e := range got {
		if e.Error == "" || !strings.Contains(e.Error, "etcd is down") {
			t.Errorf("event %d: %+v", i, e)
		}
		if i%2 == 0 {
			retry = append(retry, e.RetryIn)
			if e.Type != autoscale.EventStartFailed || !strings.Contains(e.Reason, "scaling deployment shop/web from 0 to 3") && !strings.Contains(e.Reason, "reading the scale") {
				t.Errorf("event %d: %+v", i, e)
			}
		} else if !strings.Contains(e.Reason, "endpoints of service shop/web") {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	want := []string{"20ms", "40ms", "80ms", "80ms", "80ms"}
	if !slices.Equal(retry[:5], want) {
		t.Errorf("RetryIn %v, want %v then 80ms", retry, want)
	}
	// Without backoff Resync (1 ms) and the 50 Scale calls would make
	// a round per millisecond; with it, a round per 80 ms at most.
	if rounds, limit := len(got)/2, 5+int(elapsed/(80*time.Millisecond))+2; rounds > limit {
		t.Errorf("%d failed rounds in %v, want at most %d", rounds, elapsed, limit)
	}
	// Recovered: no more events.
	n := len(ev.list())
	time.Sleep(50 * time.Millisecond)
	if m := len(ev.list()); m != n {
		t.Errorf("%d events after recovery: %+v", m-n, ev.list()[n:])
	}
}

func TestScaleFailureDoesNotHoldUpDiscovery(t *testing.T) {
	c := newCluster(t, 4)
	pool := newPool(t)
	p := newProvider(t, c, pool, Config{Port: "http", Backoff: time.Hour})
	c.client.PrependReactor("update", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments/scale"}, depName, errors.New("RBAC says no"))
	})
	p.Scale(1)
	ev := start(t, p)
	eventually(t, "an event", func() bool { return len(ev.list()) > 0 })
	e := ev.list()[0]
	if e.Type != autoscale.EventStopFailed || e.Desired != 1 || !strings.Contains(e.Reason, "from 4 to 1") || !strings.Contains(e.Error, "RBAC says no") {
		t.Fatalf("event %+v", e)
	}
	// The scale backs off for an hour; discovery goes on meanwhile, and
	// Scale calls do not cut the backoff short.
	c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: yes()}))
	for range 20 {
		p.Scale(1)
		time.Sleep(time.Millisecond)
	}
	eventually(t, "discovery", func() bool { return len(poolIDs(pool)) == 1 })
	if n := len(ev.list()); n != 1 {
		t.Fatalf("%d events, want 1: %+v", n, ev.list())
	}
}

func TestRunLeavesClusterOnExit(t *testing.T) {
	c := newCluster(t, 1)
	pool := newPool(t)
	p := newProvider(t, c, pool, Config{Port: "http"})
	c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: yes()}, ep{ip: "10.0.0.2", ready: yes()}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, nil) }()
	p.Scale(2)
	eventually(t, "scaled and discovered", func() bool { return c.replicas(t) == 2 && len(poolIDs(pool)) == 2 })
	if err := p.Run(ctx, nil); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := c.replicas(t); got != 2 {
		t.Fatalf("replicas %d after Run returned, want 2: the Deployment outlives the gateway", got)
	}
	if ids := poolIDs(pool); len(ids) != 2 {
		t.Fatalf("pool %v after Run returned", ids)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// The Controller drives the Deployment: Min at start, more when the load
// per ready endpoint goes above the target; the test plays the kubelet and
// the EndpointSlice controller.
func TestWithController(t *testing.T) {
	c := newCluster(t, 1)
	pool := newPool(t)
	p := newProvider(t, c, pool, Config{Port: "http"})
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ctl, err := autoscale.New("web", pool, p, autoscale.Config{
		Min: 2, Max: 6, Metric: autoscale.MetricInflight, Target: 4,
		Interval: time.Hour, // decisions only when the test calls Evaluate
		Clock:    clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	eventually(t, "Min replicas", func() bool { return c.replicas(t) == 2 })
	eventually(t, "two starting", func() bool { return countState(p, autoscale.Starting) == 2 })
	c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: yes()}, ep{ip: "10.0.0.2", ready: yes()}))
	eventually(t, "two in the pool", func() bool { return len(poolIDs(pool)) == 2 })

	// 16 requests in flight on 2 instances: 8 each, target 4 → 4.
	var picked []*balancer.Backend
	for range 16 {
		b, err := pool.Pick(netip.MustParseAddr("127.0.0.1"), nil)
		if err != nil {
			t.Fatal(err)
		}
		picked = append(picked, b)
	}
	defer func() {
		for _, b := range picked {
			pool.Done(b, time.Millisecond, balancer.Success)
		}
	}()
	clock.Advance(15 * time.Second)
	if d := ctl.Evaluate(); d.Desired != 4 || d.Current != 2 {
		t.Fatalf("decision %+v, want 2 → 4", d)
	}
	eventually(t, "replicas 4", func() bool { return c.replicas(t) == 4 })
	eventually(t, "two starting", func() bool { return countState(p, autoscale.Starting) == 2 })
	c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: yes()}, ep{ip: "10.0.0.2", ready: yes()},
		ep{ip: "10.0.0.3", ready: yes()}, ep{ip: "10.0.0.4", ready: yes()}))
	eventually(t, "four ready", func() bool { return countState(p, autoscale.Ready) == 4 && countState(p, autoscale.Starting) == 0 })
}

func countState(p *Provider, s autoscale.InstanceState) int {
	n := 0
	for _, in := range p.Instances() {
		if in.State == s {
			n++
		}
	}
	return n
}

// watched waits until the provider has opened n watches.
func (c *cluster) watched(t *testing.T, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d watches", n), func() bool {
		w := 0
		for _, a := range c.client.Actions() {
			if a.GetVerb() == "watch" && a.GetResource().Resource == "endpointslices" {
				w++
			}
		}
		return w >= n
	})
}

// With a Resync of an hour only the watch can bring changes into the pool;
// a watch that fails to open is retried after a backoff.
func TestDiscoveryWatch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failWatch int // watches to refuse first
	}{
		{"watch", 0},
		{"watch fails twice", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1)
			var mu sync.Mutex
			refused := 0
			c.client.PrependWatchReactor("endpointslices", func(k8stesting.Action) (bool, watch.Interface, error) {
				mu.Lock()
				defer mu.Unlock()
				if refused < tc.failWatch {
					refused++
					return true, nil, apierrors.NewTooManyRequests("slow down", 1)
				}
				return false, nil, nil
			})
			pool := newPool(t)
			p := newProvider(t, c, pool, Config{Port: "http", Resync: time.Hour, Backoff: 10 * time.Millisecond})
			ev := start(t, p)
			c.watched(t, tc.failWatch+1)
			c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: yes()}))
			eventually(t, "added", func() bool { return slices.Equal(poolIDs(pool), []string{"10.0.0.1:8080"}) })
			c.apply(t, slice("web-a", "web", ep{ip: "10.0.0.1", ready: no()}, ep{ip: "10.0.0.2", ready: yes()}))
			eventually(t, "replaced", func() bool { return slices.Equal(poolIDs(pool), []string{"10.0.0.2:8080"}) })
			if e := ev.list(); len(e) != 0 {
				t.Fatalf("events %+v", e)
			}
		})
	}
}

// BenchmarkSync measures one round (read the scale, list 4 slices of 64
// endpoints, diff them against the pool) against the fake clientset.
func BenchmarkSync(b *testing.B) {
	c := newCluster(b, 256)
	pool, err := balancer.New("web", balancer.Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(c.client, pool, Config{Namespace: ns, Deployment: depName, Port: "http"})
	if err != nil {
		b.Fatal(err)
	}
	for s := range 4 {
		var eps []ep
		for i := range 64 {
			eps = append(eps, ep{ip: fmt.Sprintf("10.0.%d.%d", s, i), ready: yes()})
		}
		if _, err := c.client.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), slice(fmt.Sprintf("web-%d", s), "web", eps...), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.syncScale(context.Background()); err != nil {
			b.Fatal(err)
		}
		if _, err := p.syncEndpoints(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	if n := len(pool.Backends()); n != 256 {
		b.Fatalf("pool has %d backends", n)
	}
}
