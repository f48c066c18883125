package cache

import (
	"github.com/prometheus/client_golang/prometheus"
)

// LayerStats counts one layer's work since the cache was created.
type LayerStats struct {
	Hits, Misses uint64
	// Evictions counts entries dropped to stay within the size bound
	// (for Redis: evicted_keys of the whole server, read every
	// Config.StatsInterval). Expirations counts memory entries dropped at
	// the end of their TTL.
	Evictions, Expirations uint64
	// Errors counts failed operations (Redis only; the memory layer does
	// not fail).
	Errors uint64
	// Entries and Bytes are the current size: for memory, this cache's
	// entries and their weight (see EntryOverhead); for Redis, the keys of
	// the whole database (DBSIZE) and the server's used_memory, read every
	// Config.StatsInterval, since Redis cannot count one prefix cheaply.
	Entries, Bytes int64
}

// HitRatio returns Hits / (Hits + Misses), or 0 before any lookup.
func (s LayerStats) HitRatio() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

// Stats is a snapshot of a Cache's counters.
type Stats struct {
	Memory LayerStats
	Redis  LayerStats

	// Fetches counts Fetcher calls, FetchErrors the failed ones.
	Fetches, FetchErrors uint64
	// Coalesced counts GetOrFetch calls that waited on a load another
	// caller on this node had started.
	Coalesced uint64
	// LockWaits counts loads that found another node's fetch lock and
	// waited; LockTimeouts those that then fetched anyway.
	LockWaits, LockTimeouts uint64
	// InvalidationsSent counts the invalidation messages published (by
	// Set, SetAndPersist, Delete, InvalidateTags and outage recoveries);
	// InvalidationsReceived the messages applied from other nodes.
	InvalidationsSent, InvalidationsReceived uint64
	// Outages counts the times Redis became unusable, Recoveries the
	// times it came back; Degraded is true during an outage.
	Outages, Recoveries uint64
	Degraded            bool
}

// Stats returns the current counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		Memory:                c.mem.stats(),
		Fetches:               c.fetches.Load(),
		FetchErrors:           c.fetchErrors.Load(),
		Coalesced:             c.coalesced.Load(),
		LockWaits:             c.lockWaits.Load(),
		LockTimeouts:          c.lockTimeouts.Load(),
		InvalidationsSent:     c.invalSent.Load(),
		InvalidationsReceived: c.invalReceived.Load(),
		Outages:               c.outages.Load(),
		Recoveries:            c.recoveries.Load(),
		Degraded:              c.outageStart.Load() != 0,
	}
	if c.rds != nil {
		s.Redis = c.rds.stats()
	}
	return s
}

// Collector returns a Prometheus collector of this cache's Stats, with the
// constant label cache=Config.Name. The caller registers it.
func (c *Cache) Collector() prometheus.Collector {
	col := &collector{c: c, labels: prometheus.Labels{"cache": c.cfg.Name}}
	col.d = col.descs()
	return col
}

type collector struct {
	c      *Cache
	labels prometheus.Labels
	d      map[string]*prometheus.Desc
}

func (col *collector) desc(name, help string, layer bool) *prometheus.Desc {
	var vars []string
	if layer {
		vars = []string{"layer"}
	}
	return prometheus.NewDesc("scaleout_cache_"+name, help, vars, col.labels)
}

func (col *collector) descs() map[string]*prometheus.Desc {
	return map[string]*prometheus.Desc{
		"hits":          col.desc("hits_total", "Lookups answered by the layer.", true),
		"misses":        col.desc("misses_total", "Lookups the layer could not answer.", true),
		"hit_ratio":     col.desc("hit_ratio", "Hits / (hits + misses) since start.", true),
		"evictions":     col.desc("evictions_total", "Entries evicted to stay within the size bound.", true),
		"expirations":   col.desc("expirations_total", "Entries dropped at the end of their TTL.", true),
		"errors":        col.desc("errors_total", "Failed operations of the layer.", true),
		"entries":       col.desc("entries", "Entries held by the layer (redis: keys of the whole database).", true),
		"bytes":         col.desc("bytes", "Bytes held by the layer (memory: as weighed; redis: the server's used_memory).", true),
		"fetches":       col.desc("fetches_total", "Fetcher calls.", false),
		"fetch_errors":  col.desc("fetch_errors_total", "Fetcher calls that failed.", false),
		"coalesced":     col.desc("coalesced_total", "GetOrFetch calls that shared another caller's load.", false),
		"lock_waits":    col.desc("lock_waits_total", "Loads that waited on another node's fetch lock.", false),
		"lock_timeouts": col.desc("lock_timeouts_total", "Loads that fetched after waiting LockWait in vain.", false),
		"inval_sent":    col.desc("invalidations_sent_total", "Writes that invalidated other nodes.", false),
		"inval_recv":    col.desc("invalidations_received_total", "Invalidations applied from other nodes.", false),
		"outages":       col.desc("redis_outages_total", "Times Redis became unusable.", false),
		"degraded":      col.desc("degraded", "1 while Redis is unusable and the cache runs on memory and fetcher.", false),
	}
}

// Describe implements prometheus.Collector.
func (col *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range col.d {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (col *collector) Collect(ch chan<- prometheus.Metric) {
	d := col.d
	s := col.c.Stats()
	counter := func(name string, v uint64, layer ...string) {
		ch <- prometheus.MustNewConstMetric(d[name], prometheus.CounterValue, float64(v), layer...)
	}
	gauge := func(name string, v float64, layer ...string) {
		ch <- prometheus.MustNewConstMetric(d[name], prometheus.GaugeValue, v, layer...)
	}
	layers := []struct {
		name string
		s    LayerStats
	}{{"memory", s.Memory}}
	if col.c.rds != nil {
		layers = append(layers, struct {
			name string
			s    LayerStats
		}{"redis", s.Redis})
	}
	for _, l := range layers {
		counter("hits", l.s.Hits, l.name)
		counter("misses", l.s.Misses, l.name)
		gauge("hit_ratio", l.s.HitRatio(), l.name)
		counter("errors", l.s.Errors, l.name)
		counter("evictions", l.s.Evictions, l.name)
		gauge("entries", float64(l.s.Entries), l.name)
		gauge("bytes", float64(l.s.Bytes), l.name)
		if l.name == "memory" {
			counter("expirations", l.s.Expirations, l.name)
		}
	}
	counter("fetches", s.Fetches)
	counter("fetch_errors", s.FetchErrors)
	counter("coalesced", s.Coalesced)
	counter("lock_waits", s.LockWaits)
	counter("lock_timeouts", s.LockTimeouts)
	counter("inval_sent", s.InvalidationsSent)
	counter("inval_recv", s.InvalidationsReceived)
	counter("outages", s.Outages)
	degraded := 0.0
	if s.Degraded {
		degraded = 1
	}
	gauge("degraded", degraded)
}
