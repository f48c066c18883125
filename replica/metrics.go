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
func (c *Cluster) Collector() prometheus.Collector { return collector{c} }

type collector struct{ c *Cluster }

var (
	descUp         = prometheus.NewDesc("scaleout_db_node_up", "1 if the PostgreSQL node is healthy.", []string{"node"}, nil)
	descRole       = prometheus.NewDesc("scaleout_db_node_role", "1 for the node's current role.", []string{"node", "role"}, nil)
	descRotation   = prometheus.NewDesc("scaleout_db_node_in_rotation", "1 if the replica serves reads.", []string{"node"}, nil)
	descLagBytes   = prometheus.NewDesc("scaleout_db_replica_lag_bytes", "WAL bytes the replica has not replayed behind the primary.", []string{"node"}, nil)
	descLagSeconds = prometheus.NewDesc("scaleout_db_replica_lag_seconds", "Seconds the replica is behind.", []string{"node"}, nil)
	descQueries    = prometheus.NewDesc("scaleout_db_queries_total", "Statements sent to the node.", []string{"node"}, nil)
	descErrors     = prometheus.NewDesc("scaleout_db_errors_total", "Statements that failed on the node.", []string{"node"}, nil)
	descRetries    = prometheus.NewDesc("scaleout_db_read_retries_total", "Reads that failed on the node and were retried on another.", []string{"node"}, nil)
	descPool       = prometheus.NewDesc("scaleout_db_pool_conns", "Connections of the node's pool by state.", []string{"node", "state"}, nil)
	descToPrimary  = prometheus.NewDesc("scaleout_db_reads_to_primary_total", "Reads sent to the primary because no replica could serve them.", nil, nil)
	descNoPrimary  = prometheus.NewDesc("scaleout_db_no_primary_total", "Statements refused because there was no primary.", nil, nil)
	collectorDescs = []*prometheus.Desc{descUp, descRole, descRotation, descLagBytes, descLagSeconds, descQueries, descErrors, descRetries, descPool, descToPrimary, descNoPrimary}
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range collectorDescs {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (col collector) Collect(ch chan<- prometheus.Metric) {
	s := col.c.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, n := range s.Nodes {
		gauge(descUp, b2f(n.Healthy), n.Addr)
		for _, r := range []Role{RolePrimary, RoleReplica, RoleUnknown} {
			gauge(descRole, b2f(n.Role == r), n.Addr, r.String())
		}
		if n.Role == RoleReplica {
			gauge(descRotation, b2f(n.InRotation), n.Addr)
			if n.LagBytes >= 0 {
				gauge(descLagBytes, float64(n.LagBytes), n.Addr)
			}
			if n.LagSeconds >= 0 {
				gauge(descLagSeconds, n.LagSeconds, n.Addr)
			}
		}
		counter(descQueries, n.Queries, n.Addr)
		counter(descErrors, n.Errors, n.Addr)
		counter(descRetries, n.Retries, n.Addr)
		gauge(descPool, float64(n.PoolAcquired), n.Addr, "acquired")
		gauge(descPool, float64(n.PoolIdle), n.Addr, "idle")
		gauge(descPool, float64(n.PoolMax), n.Addr, "max")
	}
	counter(descToPrimary, s.ReadsToPrimary)
	counter(descNoPrimary, s.NoPrimaryErrors)
}
