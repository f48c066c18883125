package replica

import "time"

// Status is a point-in-time view of the cluster, for an admin API or a
// dashboard. It holds no references into the Cluster.
type Status struct {
	// Primary is the address of the node writes go to, or "" if none.
	Primary string `json:"primary"`
	// NoPrimaryReason says why there is no primary; "" when there is one.
	NoPrimaryReason string `json:"no_primary_reason,omitempty"`
	// Balance is the read balancing policy.
	Balance string `json:"balance"`
	// ReadsToPrimary counts reads sent to the primary because no replica
	// in rotation could serve them (none healthy, all behind, or none had
	// reached the read's token).
	ReadsToPrimary uint64 `json:"reads_to_primary"`
	// NoPrimaryErrors counts statements refused with ErrNoPrimary.
	NoPrimaryErrors uint64 `json:"no_primary_errors"`
	// Nodes are the nodes in Config.Nodes order.
	Nodes []NodeStatus `json:"nodes"`
}

// NodeStatus is one node's state as of its last check, and its counters.
type NodeStatus struct {
	// Addr is host:port/database, without credentials.
	Addr string `json:"addr"`
	// Role is what the last check found the node to be.
	Role Role `json:"role"`
	// Healthy: the last check succeeded and no statement has found the
	// node gone since.
	Healthy bool `json:"healthy"`
	// InRotation: a replica that serves reads (healthy and within
	// Config.MaxLag and Config.MaxLagBytes).
	InRotation bool `json:"in_rotation"`
	// LagBytes is how many bytes of WAL the replica has not replayed yet
	// behind the primary's position; -1 if unknown (no primary, or not a
	// replica).
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds is how long the replica has been missing WAL the primary
	// had: the time since the checks first saw the primary past the
	// position the replica has replayed (to within one CheckInterval), 0
	// when caught up. With no primary known, it is the time since the last
	// replayed commit while received WAL waits to be replayed. -1 if
	// unknown (not a replica).
	LagSeconds float64 `json:"lag_seconds"`
	// LSN is the replica's replayed position or the primary's current one.
	LSN Token `json:"lsn"`
	// RTT is the moving average of round trips to the node.
	RTT time.Duration `json:"rtt_ns"`
	// Checked is when the node was last checked.
	Checked time.Time `json:"checked"`
	// LastError is the last check's error, if it failed.
	LastError string `json:"last_error,omitempty"`
	// Queries counts statements sent to the node (a transaction counts
	// once), Errors those that failed, Retries the reads that failed here
	// and were retried on another node.
	Queries uint64 `json:"queries"`
	Errors  uint64 `json:"errors"`
	Retries uint64 `json:"retries"`
	// Pool use: connections in use, idle, open, and the maximum.
	PoolAcquired int32 `json:"pool_acquired"`
	PoolIdle     int32 `json:"pool_idle"`
	PoolTotal    int32 `json:"pool_total"`
	PoolMax      int32 `json:"pool_max"`
}

// Status returns the current state of every node.
func (c *Cluster) Status() Status {
	r := c.route.Load()
	s := Status{
		NoPrimaryReason: r.why,
		Balance:         c.cfg.Balance.String(),
		ReadsToPrimary:  c.readsToPrimary.Load(),
		NoPrimaryErrors: c.noPrimary.Load(),
		Nodes:           make([]NodeStatus, len(c.nodes)),
	}
	if r.primary != nil {
		s.Primary = r.primary.addr
		s.NoPrimaryReason = ""
	}
	for i, n := range c.nodes {
		st := n.state()
		ps := n.pool.Stat()
		down := n.down.Load()
		s.Nodes[i] = NodeStatus{
			Addr:         n.addr,
			Role:         st.role,
			Healthy:      st.healthy && !down,
			InRotation:   st.inRotation && !down,
			LagBytes:     st.lagBytes,
			LagSeconds:   st.lagSeconds,
			LSN:          Token(st.lsn),
			RTT:          time.Duration(n.rtt.Load()),
			Checked:      st.checked,
			LastError:    st.lastErr,
			Queries:      n.queries.Load(),
			Errors:       n.errs.Load(),
			Retries:      n.retries.Load(),
			PoolAcquired: ps.AcquiredConns(),
			PoolIdle:     ps.IdleConns(),
			PoolTotal:    ps.TotalConns(),
			PoolMax:      ps.MaxConns(),
		}
	}
	return s
}
