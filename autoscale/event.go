package autoscale

import (
	"log/slog"
	"sync"
	"time"
)

// Event types.
const (
	// EventScaleUp: the desired number of instances went up.
	EventScaleUp = "scale_up"
	// EventScaleDown: the desired number of instances went down.
	EventScaleDown = "scale_down"
	// EventStartFailed: an instance did not start or did not pass its
	// health check in time. A provider failure.
	EventStartFailed = "start_failed"
	// EventCrashed: a running instance exited on its own. A provider
	// failure; the instance is replaced.
	EventCrashed = "crashed"
	// EventStopFailed: an instance could not be stopped cleanly (it was
	// killed after the grace period, or its drain timed out).
	EventStopFailed = "stop_failed"
)

// Event is a decision of the controller or something that happened to an
// instance, with its inputs.
type Event struct {
	Time time.Time `json:"time"`
	// Type is one of scale_up, scale_down, start_failed, crashed,
	// stop_failed.
	Type string `json:"type"`
	// Metric, Observed and Target are the inputs of a scaling decision;
	// MetricMissing is true when there was no value to observe.
	Metric        string  `json:"metric,omitempty"`
	Observed      float64 `json:"observed"`
	MetricMissing bool    `json:"metric_missing,omitempty"`
	Target        float64 `json:"target,omitempty"`
	// Current is the number of ready instances, Desired the number asked
	// for after the decision (before it, for provider events).
	Current int `json:"current"`
	Desired int `json:"desired"`
	// Instance names the instance of a provider event.
	Instance string `json:"instance,omitempty"`
	// Reason explains the decision or the failure.
	Reason string `json:"reason"`
	// Error is the error of a provider failure.
	Error string `json:"error,omitempty"`
	// RetryIn is the backoff before the next start attempt, after a
	// provider failure.
	RetryIn string `json:"retry_in,omitempty"`
}

// isFailure reports whether the event is a provider failure.
func (e Event) isFailure() bool {
	return e.Type == EventStartFailed || e.Type == EventCrashed || e.Type == EventStopFailed
}

// eventLog keeps the last events, newest last.
type eventLog struct {
	mu     sync.Mutex
	max    int
	events []Event
	counts map[string]uint64 // by type
}

func newEventLog(n int) *eventLog {
	return &eventLog{max: n, counts: map[string]uint64{}}
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.events) == l.max {
		copy(l.events, l.events[1:])
		l.events = l.events[:len(l.events)-1]
	}
	l.events = append(l.events, e)
	l.counts[e.Type]++
}

func (l *eventLog) list() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.events...)
}

func (l *eventLog) count(typ string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[typ]
}

// logEvent writes e to log: scaling at Info, failures at Warn.
func logEvent(log *slog.Logger, e Event) {
	attrs := []any{"type", e.Type, "current", e.Current, "desired", e.Desired, "reason", e.Reason}
	if e.Metric != "" {
		attrs = append(attrs, "metric", e.Metric, "observed", e.Observed, "target", e.Target)
		if e.MetricMissing {
			attrs = append(attrs, "metric_missing", true)
		}
	}
	if e.Instance != "" {
		attrs = append(attrs, "instance", e.Instance)
	}
	if e.Error != "" {
		attrs = append(attrs, "err", e.Error)
	}
	if e.RetryIn != "" {
		attrs = append(attrs, "retry_in", e.RetryIn)
	}
	if e.isFailure() {
		log.Warn("autoscale event", attrs...)
		return
	}
	log.Info("autoscale event", attrs...)
}
