package balancer

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type prometheusMetric = prometheus.Metric

func TestCollector(t *testing.T) {
	t.Parallel()
	bs := backends(t, 2)
	p, _ := testPool(t, Config{Passive: PassiveConfig{Failures: 1}}, bs)
	outcome(t, p, bs[0], 250*time.Millisecond, Success)
	outcome(t, p, bs[0], 250*time.Millisecond, Success)
	outcome(t, p, bs[1], time.Millisecond, ConnectFailure) // ejected
	held, _ := p.Pick(netip.Addr{}, []*Backend{bs[1]})
	_ = held

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() []*Pool { return []*Pool{p} }))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = value(m)
		}
	}
	a, b := ",backend="+bs[0].ID, ",backend="+bs[1].ID
	want := map[string]float64{
		"scaleout_backend_up" + a + ",upstream=app":                                     1,
		"scaleout_backend_up" + b + ",upstream=app":                                     0,
		"scaleout_backend_state" + b + ",state=unhealthy,upstream=app":                  1,
		"scaleout_backend_state" + b + ",state=healthy,upstream=app":                    0,
		"scaleout_backend_active_requests" + a + ",upstream=app":                        1,
		"scaleout_backend_ewma_seconds" + a + ",upstream=app":                           0.25,
		"scaleout_backend_requests_total" + a + ",outcome=success,upstream=app":         2,
		"scaleout_backend_requests_total" + b + ",outcome=connect_failure,upstream=app": 1,
		"scaleout_backend_state_changes_total" + b + ",to=unhealthy,upstream=app":       1,
		"scaleout_backend_state_changes_total" + a + ",to=unhealthy,upstream=app":       0,
		"scaleout_backend_ejections_total" + b + ",upstream=app":                        1,
		"scaleout_backend_consecutive_failures" + b + ",upstream=app":                   1,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return -1
}
