// Package kubernetes is the Kubernetes provider of package autoscale: it
// scales a Deployment through its scale subresource and feeds the
// Deployment's ready endpoints, read from the EndpointSlices of a Service,
// into the balancer pool of the upstream. It lives apart from autoscale so
// that programs that do not use it do not link k8s.io/client-go.
//
//	client, err := k8s.NewForConfig(restConfig) // k8s "k8s.io/client-go/kubernetes"
//	prov, err := kubernetes.New(client, pool, kubernetes.Config{Namespace: "shop", Deployment: "web", Port: "http"})
//	ctl, err := autoscale.New("web", pool, prov, autoscale.Config{Min: 2, Max: 20, Metric: autoscale.MetricInflight, Target: 8})
//	go ctl.Run(ctx)
//
// # Scaling
//
// Scale records the desired number of replicas and returns at once; Run
// writes it to the Deployment's scale subresource (GetScale, then
// UpdateScale), retrying on a conflict, at once and again at every Resync
// if the replicas differ: once Scale has been called the provider owns
// spec.replicas of the Deployment, so do not point a HorizontalPodAutoscaler
// or a GitOps tool that sets replicas at the same Deployment. Before the
// first Scale the provider only reads the replicas.
//
// # Discovery
//
// The provider lists the EndpointSlices labelled
// kubernetes.io/service-name=<Service> at once, then every Resync (default
// 5 s), and also as soon as a watch on them reports a change. The list, not
// the watch, is the source of truth: a missed event, a restarted API server
// or an expired watch can never leave the pool out of date for longer than
// Resync, and every failure surfaces as the error of one call. (A watch
// that fails is opened again after a backoff, silently: the list reports.)
// An endpoint is ready when its ready condition is true or unset and it is
// not terminating. A ready endpoint joins the pool (balancer.NewBackend of
// scheme://address:port, its backend ID is address:port); one that becomes
// not ready or terminating, or disappears, is removed from the pool, which
// drains it. Give the pods a preStop sleep of a few seconds so that they
// still serve while the gateway notices they are terminating (at once by
// the watch, within Resync without it). If some EndpointSlice cannot be read (for example it lacks the
// configured port) the pool is left as it is and the error is reported.
//
// Instances reports the ready endpoints (ready), the removed ones still
// draining in the pool (stopping) and, as starting, as many placeholder
// instances as the Deployment's spec.replicas exceeds the ready endpoints:
// pods the Deployment wants that are not ready yet, without a backend.
//
// # Failures
//
// A failed API call is reported to Run's report function as an
// autoscale.Event with the error and RetryIn: start_failed when reading the
// scale, scaling up or discovering the endpoints failed, stop_failed when
// scaling down failed. The scale and the discovery are retried each on
// its own backoff — Backoff, doubling up to MaxBackoff while the failures
// go on, back to Resync after a success — so that a Deployment that cannot
// be scaled (RBAC, deleted) does not hold up discovery. Neither Scale nor
// the watch cuts a backoff short: a broken API server is never called in a
// tight loop.
//
// # Stopping
//
// When Run's context is done it returns and changes nothing: it does NOT
// scale the Deployment to 0 and leaves the endpoints in the pool. The
// cluster outlives the gateway: the pods keep serving other gateway
// replicas, or this gateway once it restarts. (The process provider stops
// its instances on exit; this one deliberately does not.)
//
// # Running in a cluster
//
// Run the gateway in a pod with a ServiceAccount that may read and write
// the Deployment's scale and read the Service's EndpointSlices:
//
//	apiVersion: rbac.authorization.k8s.io/v1
//	kind: Role
//	metadata: {name: scaleout-gateway, namespace: shop}
//	rules:
//	- apiGroups: ["apps"]
//	  resources: ["deployments/scale"]
//	  resourceNames: ["web"]
//	  verbs: ["get", "update"]
//	- apiGroups: ["discovery.k8s.io"]
//	  resources: ["endpointslices"]
//	  verbs: ["list", "watch"]
//	---
//	apiVersion: rbac.authorization.k8s.io/v1
//	kind: RoleBinding
//	metadata: {name: scaleout-gateway, namespace: shop}
//	roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: scaleout-gateway}
//	subjects:
//	- {kind: ServiceAccount, name: scaleout-gateway, namespace: shop}
//
// Without watch the provider still works, on the Resync poll alone. Inside
// the pod, build the client from the ServiceAccount's token with
// rest.InClusterConfig:
//
//	cfg, err := rest.InClusterConfig() // k8s.io/client-go/rest
//	if err != nil { ... }              // not in a pod
//	client, err := k8s.NewForConfig(cfg)
//
// and give Config.Namespace the pod's namespace (the downward API, or the
// file /var/run/secrets/kubernetes.io/serviceaccount/namespace). The pods'
// addresses must be reachable from the gateway's pod (they are, on a
// standard pod network).
//
// This package is tested against client-go's fake clientset
// (k8s.io/client-go/kubernetes/fake), with a reactor that emulates the
// scale subresource; no cluster can run where it was written, so it has
// not been run against a real API server.
//
// # Concurrency
//
// Scale, Instances and Config are safe to call from many goroutines at
// once, also while Run runs. Run runs once at a time (ErrRunning
// otherwise); it is normally started by autoscale.Controller.Run.
package kubernetes
