package replica

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector of the cluster's state, built
// from Status at each scrape. Register it on your own registry (the gateway
// does); it is never registered globally. Metrics, labelled by node
// (host:port/database):
//
//	scaleout_db_node_up              1 if the node is healthy
//	scaleout_db_node_role            1 for the node's current role (label role: primary, replica, unknown)
//	scaleout_db_node_in_rotation     1 if the replica serves reads
//	scaleout_db_replica_lag_bytes    WAL bytes not yet replayed (replicas, when known)
//	scaleout_db_replica_lag_seconds  seconds behind (replicas)
//	scaleout_db_queries_total        statements sent to the node
//	scaleout_db_errors_total         statements that failed on the node
//	scaleout_db_read_retries_total   reads that failed on the node and were retried elsewhere
//	scaleout_db_pool_conns           pool connections by state (acquired, idle) and max
//	scaleout_db_reads_to_primary_total  reads that fell back to the primary (no node label)
//	scaleout_db_no_primary_total        statements refused with ErrNoPrimary (no node label)
func (c *Cluster) Collector() prometheus.Collector {
	node := []string{"node"}
	return &collector{
		c:          c,
		up:         prometheus.NewDesc("scaleout_db_node_up", "1 if the PostgreSQL node is healthy.", node, nil),
		role:       prometheus.NewDesc("scaleout_db_node_role", "1 for the node's current role.", []string{"node", "role"}, nil),
		rotation:   prometheus.NewDesc("scaleout_db_node_in_rotation", "1 if the replica serves reads.", node, nil),
		lagBytes:   prometheus.NewDesc("scaleout_db_replica_lag_bytes", "WAL bytes the replica has not replayed behind the primary.", node, nil),
		lagSeconds: prometheus.NewDesc("scaleout_db_replica_lag_seconds", "Seconds the replica is behind.", node, nil),
		queries:    prometheus.NewDesc("scaleout_db_queries_total", "Statements sent to the node.", node, nil),
		errors:     prometheus.NewDesc("scaleout_db_errors_total", "Statements that failed on the node.", node, nil),
		retries:    prometheus.NewDesc("scaleout_db_read_retries_total", "Reads that failed on the node and were retried on another.", node, nil),
		pool:       prometheus.NewDesc("scaleout_db_pool_conns", "Connections of the node's pool by state.", []string{"node", "state"}, nil),
		toPrimary:  prometheus.NewDesc("scaleout_db_reads_to_primary_total", "Reads sent to the primary because no replica could serve them.", nil, nil),
		noPrimary:  prometheus.NewDesc("scaleout_db_no_primary_total", "Statements refused because there was no primary.", nil, nil),
	}
}

type collector struct {
	c                                        *Cluster
	up, role, rotation, lagBytes, lagSeconds *prometheus.Desc
	queries, errors, retries, pool           *prometheus.Desc
	toPrimary, noPrimary                     *prometheus.Desc
}

func (col *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{col.up, col.role, col.rotation, col.lagBytes, col.lagSeconds,
		col.queries, col.errors, col.retries, col.pool, col.toPrimary, col.noPrimary} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (col *collector) Collect(ch chan<- prometheus.Metric) {
	s := col.c.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, n := range s.Nodes {
		gauge(col.up, b2f(n.Healthy), n.Addr)
		for _, r := range []Role{RolePrimary, RoleReplica, RoleUnknown} {
			gauge(col.role, b2f(n.Role == r), n.Addr, r.String())
		}
		if n.Role == RoleReplica {
			gauge(col.rotation, b2f(n.InRotation), n.Addr)
			if n.LagBytes >= 0 {
				gauge(col.lagBytes, float64(n.LagBytes), n.Addr)
			}
			if n.LagSeconds >= 0 {
				gauge(col.lagSeconds, n.LagSeconds, n.Addr)
			}
		}
		counter(col.queries, n.Queries, n.Addr)
		counter(col.errors, n.Errors, n.Addr)
		counter(col.retries, n.Retries, n.Addr)
		gauge(col.pool, float64(n.PoolAcquired), n.Addr, "acquired")
		gauge(col.pool, float64(n.PoolIdle), n.Addr, "idle")
		gauge(col.pool, float64(n.PoolMax), n.Addr, "max")
	}
	counter(col.toPrimary, s.ReadsToPrimary)
	counter(col.noPrimary, s.NoPrimaryErrors)
}
