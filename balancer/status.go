package balancer

// PoolStatus is a pool's state for the admin API.
type PoolStatus struct {
	Name      string          `json:"name"`
	Algorithm string          `json:"algorithm"`
	Backends  []BackendStatus `json:"backends"`
}

// BackendStatus is a backend's state for the admin API.
type BackendStatus struct {
	ID  string `json:"id"`
	URL string `json:"url"`
	// Weight is the weight in effect.
	Weight int    `json:"weight"`
	State  string `json:"state"`
	// Active is the number of requests in flight.
	Active int64 `json:"active"`
	// EWMAms is the latency average in milliseconds; 0 before any sample.
	EWMAms              float64 `json:"ewma_ms"`
	ConsecutiveFailures int64   `json:"consecutive_failures"`
	Served              uint64  `json:"served"`
	Ejections           uint64  `json:"ejections"`
	// LastCheckError is the error of the last active check; empty when it
	// passed.
	LastCheckError string `json:"last_check_error"`
	// Removing is true while the backend drains before leaving the pool.
	Removing bool `json:"removing"`
}

// Status returns a consistent copy of the pool's state.
func (p *Pool) Status() PoolStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.snap.Load()
	st := PoolStatus{Name: p.name, Algorithm: s.cfg.Algorithm, Backends: make([]BackendStatus, 0, len(s.backends))}
	for _, b := range s.backends {
		st.Backends = append(st.Backends, BackendStatus{
			ID:                  b.ID,
			URL:                 b.URL.String(),
			Weight:              b.CurrentWeight(),
			State:               b.State().String(),
			Active:              b.Active(),
			EWMAms:              float64(b.EWMA().Microseconds()) / 1000,
			ConsecutiveFailures: b.ConsecutiveFailures(),
			Served:              b.Served(),
			Ejections:           b.Ejections(),
			LastCheckError:      b.LastCheckError(),
			Removing:            b.removing,
		})
	}
	return st
}
