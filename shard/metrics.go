package shard

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type routerMetrics struct {
	version       atomic.Int64
	holds         atomic.Int64
	retries       atomic.Int64
	partials      atomic.Int64
	refreshErrors atomic.Int64
}

var (
	descVersion   = prometheus.NewDesc("scaleout_shard_map_version", "Version of the shard map the router routes by.", []string{"keyspace"}, nil)
	descHolds     = prometheus.NewDesc("scaleout_shard_write_holds_total", "Calls to For that waited for a bucket's cutover.", []string{"keyspace"}, nil)
	descRetries   = prometheus.NewDesc("scaleout_shard_write_retries_total", "Writes refused by a moving bucket's fence and retried by Do.", []string{"keyspace"}, nil)
	descPartials  = prometheus.NewDesc("scaleout_shard_scatter_partial_total", "Scatter-gathers in which at least one shard failed.", []string{"keyspace"}, nil)
	descReloadErr = prometheus.NewDesc("scaleout_shard_map_reload_errors_total", "Failed checks or loads of a new map version.", []string{"keyspace"}, nil)
	routerDescs   = []*prometheus.Desc{descVersion, descHolds, descRetries, descPartials, descReloadErr}
)

// Collector returns a Prometheus collector of the Router's state, for the
// caller to register (it is never registered globally). Metrics, labelled
// by keyspace:
//
//	scaleout_shard_map_version               version of the map in use
//	scaleout_shard_write_holds_total         For calls that waited for a cutover
//	scaleout_shard_write_retries_total       writes refused by a move's fence and retried by Do
//	scaleout_shard_scatter_partial_total     scatter-gathers with a failed shard
//	scaleout_shard_map_reload_errors_total   failed map checks or loads
func (r *Router) Collector() prometheus.Collector { return routerCollector{r} }

type routerCollector struct{ r *Router }

func (c routerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range routerDescs {
		ch <- d
	}
}

func (c routerCollector) Collect(ch chan<- prometheus.Metric) {
	m, ks := c.r.metrics, c.r.cfg.Keyspace
	ch <- prometheus.MustNewConstMetric(descVersion, prometheus.GaugeValue, float64(m.version.Load()), ks)
	ch <- prometheus.MustNewConstMetric(descHolds, prometheus.CounterValue, float64(m.holds.Load()), ks)
	ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(m.retries.Load()), ks)
	ch <- prometheus.MustNewConstMetric(descPartials, prometheus.CounterValue, float64(m.partials.Load()), ks)
	ch <- prometheus.MustNewConstMetric(descReloadErr, prometheus.CounterValue, float64(m.refreshErrors.Load()), ks)
}

type rebalanceMetrics struct {
	running     atomic.Bool
	total       atomic.Int64
	done        atomic.Int64
	moves       atomic.Int64 // completed, ever
	rows        atomic.Int64
	lastHold    atomic.Int64 // ns
	longestHold atomic.Int64 // ns
}

func (m *rebalanceMetrics) start(total, done int) {
	m.running.Store(true)
	m.total.Store(int64(total))
	m.done.Store(int64(done))
}

func (m *rebalanceMetrics) stop() { m.running.Store(false) }

func (m *rebalanceMetrics) movesDone(n int) {
	m.done.Add(int64(n))
	m.moves.Add(int64(n))
}

func (m *rebalanceMetrics) hold(d time.Duration) {
	m.lastHold.Store(int64(d))
	for {
		old := m.longestHold.Load()
		if int64(d) <= old || m.longestHold.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

var (
	descRunning   = prometheus.NewDesc("scaleout_shard_rebalance_running", "1 while a rebalance runs.", nil, nil)
	descProgress  = prometheus.NewDesc("scaleout_shard_rebalance_progress_ratio", "Moves done over moves planned in the current or last rebalance.", nil, nil)
	descMovesPlan = prometheus.NewDesc("scaleout_shard_rebalance_moves_planned", "Bucket moves of the current or last rebalance.", nil, nil)
	descMovesDone = prometheus.NewDesc("scaleout_shard_rebalance_moves_total", "Bucket moves completed.", nil, nil)
	descRows      = prometheus.NewDesc("scaleout_shard_rebalance_rows_copied_total", "Rows copied to new shards, catch-up included.", nil, nil)
	descLastHold  = prometheus.NewDesc("scaleout_shard_rebalance_last_hold_seconds", "How long the last move held its bucket's writes.", nil, nil)
	descLongHold  = prometheus.NewDesc("scaleout_shard_rebalance_longest_hold_seconds", "Longest time a move held its bucket's writes.", nil, nil)
	rebalDescs    = []*prometheus.Desc{descRunning, descProgress, descMovesPlan, descMovesDone, descRows, descLastHold, descLongHold}
)

// Collector returns a Prometheus collector of the Rebalancer's progress,
// for the caller to register:
//
//	scaleout_shard_rebalance_running               1 while a rebalance runs
//	scaleout_shard_rebalance_progress_ratio        moves done / moves planned
//	scaleout_shard_rebalance_moves_planned         moves of the current or last rebalance
//	scaleout_shard_rebalance_moves_total           moves completed
//	scaleout_shard_rebalance_rows_copied_total     rows copied (catch-up included)
//	scaleout_shard_rebalance_last_hold_seconds     write hold of the last move
//	scaleout_shard_rebalance_longest_hold_seconds  longest write hold
func (rb *Rebalancer) Collector() prometheus.Collector { return rebalCollector{rb.metrics} }

type rebalCollector struct{ m *rebalanceMetrics }

func (c rebalCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range rebalDescs {
		ch <- d
	}
}

func (c rebalCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	running := 0.0
	if m.running.Load() {
		running = 1
	}
	ratio := 1.0
	if t := m.total.Load(); t > 0 {
		ratio = float64(m.done.Load()) / float64(t)
	}
	ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, running)
	ch <- prometheus.MustNewConstMetric(descProgress, prometheus.GaugeValue, ratio)
	ch <- prometheus.MustNewConstMetric(descMovesPlan, prometheus.GaugeValue, float64(m.total.Load()))
	ch <- prometheus.MustNewConstMetric(descMovesDone, prometheus.CounterValue, float64(m.moves.Load()))
	ch <- prometheus.MustNewConstMetric(descRows, prometheus.CounterValue, float64(m.rows.Load()))
	ch <- prometheus.MustNewConstMetric(descLastHold, prometheus.GaugeValue, time.Duration(m.lastHold.Load()).Seconds())
	ch <- prometheus.MustNewConstMetric(descLongHold, prometheus.GaugeValue, time.Duration(m.longestHold.Load()).Seconds())
}
