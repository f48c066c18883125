package autoscale

import (
	"context"
	"time"

	"github.com/scaleout/scaleout/balancer"
)

// Pool is where instances join and leave the balancer; *balancer.Pool
// satisfies it.
type Pool interface {
	// Add adds a backend; it takes traffic at once.
	Add(b *balancer.Backend) error
	// Remove drains a backend and takes it out once idle.
	Remove(id string) error
	// WaitDrained waits until a removed backend has no request in flight.
	WaitDrained(ctx context.Context, id string) error
	// Backends lists the backends, draining ones included.
	Backends() []*balancer.Backend
}

var _ Pool = (*balancer.Pool)(nil)

// Provider runs the instances of one upstream. The Controller tells it how
// many to run with Scale and reads back what runs with Instances.
type Provider interface {
	// Scale sets the number of instances to run. It returns at once; the
	// provider starts and stops instances in the background.
	Scale(n int)
	// Instances lists the instances that are starting, ready or stopping.
	Instances() []Instance
	// Run runs the provider until ctx is done, reporting failures and
	// changes through report; then it stops the instances it runs itself
	// (the process provider does; the kubernetes provider leaves the
	// Deployment as it is, since the cluster outlives the gateway) and
	// returns.
	Run(ctx context.Context, report func(Event)) error
}

// CPUSource is implemented by providers that measure the CPU time their
// instances use; the cpu metric needs one.
type CPUSource interface {
	// CPUTimes returns the CPU time (user and system) each running
	// instance has used so far, by backend ID.
	CPUTimes() map[string]time.Duration
}

// InstanceState is where an instance is in its life.
type InstanceState string

// The states of an instance.
const (
	// Starting: started, its health check not passed yet; not in the pool.
	Starting InstanceState = "starting"
	// Ready: health check passed, in the pool.
	Ready InstanceState = "ready"
	// Stopping: draining out of the pool, then terminated.
	Stopping InstanceState = "stopping"
)

// Instance is one running copy of the app.
type Instance struct {
	// ID is the provider's name for the instance (INSTANCE_ID).
	ID string `json:"id"`
	// Backend is the ID of the instance's backend in the pool (host:port).
	Backend string `json:"backend"`
	// URL is the instance's base URL.
	URL string `json:"url"`
	// PID is the process ID, for the process provider.
	PID int `json:"pid,omitempty"`
	// State is starting, ready or stopping.
	State InstanceState `json:"state"`
	// Started is when the instance was started.
	Started time.Time `json:"started"`
}
