package autoscale

import "time"

// Status is a controller's state for the admin API (GET /api/autoscale).
type Status struct {
	Upstream  string  `json:"upstream"`
	Metric    string  `json:"metric"`
	Target    float64 `json:"target"`
	Tolerance float64 `json:"tolerance"`
	Min       int     `json:"min"`
	Max       int     `json:"max"`
	// Desired is the number of instances asked of the provider.
	Desired int `json:"desired"`
	// Current is the number of ready instances at the last decision,
	// Starting the number of those starting or not healthy yet.
	Current  int `json:"current"`
	Starting int `json:"starting"`
	// LastDecision is the last evaluation, nil before the first.
	LastDecision *Decision `json:"last_decision"`
	// Instances are the provider's instances now.
	Instances []Instance `json:"instances"`
	// Backoff is the provider's retry state, when it reports one.
	Backoff *Backoff `json:"backoff,omitempty"`
	// ScaleUps, ScaleDowns and ProviderFailures count events since start.
	ScaleUps         uint64 `json:"scale_ups"`
	ScaleDowns       uint64 `json:"scale_downs"`
	ProviderFailures uint64 `json:"provider_failures"`
	// Events are the last events, oldest first.
	Events []Event `json:"events"`
}

// Backoff is the retry state of a provider whose instances fail to start
// or crash.
type Backoff struct {
	// ConsecutiveFailures counts failures since an instance last stayed up.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// NextAttempt is when the next instance may be started; zero when
	// there is no failure to back off from.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// LastError is the last failure's error.
	LastError string `json:"last_error,omitempty"`
}

// BackoffReporter is implemented by providers that back off after
// failures; Status includes their state.
type BackoffReporter interface {
	Backoff() Backoff
}

// Status returns a consistent copy of the controller's state.
func (c *Controller) Status() Status {
	insts := c.prov.Instances()
	c.mu.Lock()
	st := Status{
		Upstream: c.upstream, Metric: c.cfg.Metric, Target: c.cfg.Target, Tolerance: c.cfg.Tolerance,
		Min: c.cfg.Min, Max: c.cfg.Max, Desired: c.desired, Current: c.current, Starting: c.starting,
		Instances: insts,
	}
	if c.last != nil {
		d := *c.last
		st.LastDecision = &d
	}
	c.mu.Unlock()
	if br, ok := c.prov.(BackoffReporter); ok {
		b := br.Backoff()
		st.Backoff = &b
	}
	st.ScaleUps = c.events.count(EventScaleUp)
	st.ScaleDowns = c.events.count(EventScaleDown)
	st.ProviderFailures = c.events.count(EventStartFailed) + c.events.count(EventCrashed) + c.events.count(EventStopFailed)
	st.Events = c.events.list()
	return st
}
