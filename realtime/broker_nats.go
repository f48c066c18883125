package realtime

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// NATSBroker is a Broker over NATS core: publications travel on one NATS
// subject that every node subscribes to. NATS core keeps nothing, so the
// sequence numbers and histories are kept in Redis when History is given
// (the same keys as RedisBroker); without it, messages carry no sequence
// number and History returns ErrNoHistory, so reconnecting clients are
// told to resync.
//
// With History, two nodes publishing on one channel at once may have their
// messages cross in NATS; the Hub puts them back in sequence order from the
// history, so clients still see each channel in order.
type NATSBroker struct {
	conn    *nats.Conn
	subject string
	history *RedisBroker
}

// NATSBrokerConfig configures a NATSBroker. The zero value works.
type NATSBrokerConfig struct {
	// Subject is the NATS subject carrying publications. Default
	// "scaleout.realtime".
	Subject string
	// History is the Redis client keeping sequence numbers and histories.
	// By default there is none (see NATSBroker).
	History redis.UniversalClient
	// HistoryPrefix starts the Redis keys. Default "scaleout:rt".
	HistoryPrefix string
}

var _ Broker = (*NATSBroker)(nil)

// NewNATSBroker returns a broker over conn. Configure conn to reconnect
// forever (nats.MaxReconnects(-1)) so the broker comes back after an outage.
func NewNATSBroker(conn *nats.Conn, cfg NATSBrokerConfig) *NATSBroker {
	if cfg.Subject == "" {
		cfg.Subject = "scaleout.realtime"
	}
	b := &NATSBroker{conn: conn, subject: cfg.Subject}
	if cfg.History != nil {
		b.history = NewRedisBroker(cfg.History, RedisBrokerConfig{Prefix: cfg.HistoryPrefix})
	}
	return b
}

// Publish implements Broker.
func (b *NATSBroker) Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (Position, error) {
	var pos Position
	if b.history != nil && opts.HistorySize > 0 {
		var err error
		if pos, err = b.history.publish(ctx, channel, data, opts, false); err != nil {
			return Position{}, err
		}
	}
	if !b.conn.IsConnected() {
		return pos, fmt.Errorf("nats broker: publishing: %w: %s", ErrBrokerDown, b.conn.Status())
	}
	msg := encodeWire(Publication{Channel: channel, Position: pos, Data: data, Time: time.Now()})
	if err := b.conn.Publish(b.subject, msg); err != nil {
		return pos, fmt.Errorf("nats broker: publishing: %w: %w", ErrBrokerDown, err)
	}
	return pos, nil
}

// History implements Broker.
func (b *NATSBroker) History(ctx context.Context, channel string, since Position) ([]Publication, Position, error) {
	if b.history == nil {
		return nil, Position{}, ErrNoHistory
	}
	return b.history.History(ctx, channel, since)
}

// Subscribe implements Broker.
func (b *NATSBroker) Subscribe(ctx context.Context, h BrokerHandler) error {
	// NATS calls the handlers below from one goroutine per subscription and
	// the connection callbacks from another; funnel both into one.
	events := make(chan func(), 1024)
	sub, err := b.conn.Subscribe(b.subject, func(m *nats.Msg) {
		p, err := decodeWire(m.Data)
		if err != nil {
			return
		}
		select {
		case events <- func() { h.HandlePublication(p) }:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("nats broker: subscribing: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	state := func(up bool, err error) {
		select {
		case events <- func() { h.HandleBrokerState(up, err) }:
		case <-ctx.Done():
		}
	}
	b.conn.SetDisconnectErrHandler(func(_ *nats.Conn, err error) {
		state(false, fmt.Errorf("nats broker: %w: %v", ErrBrokerDown, err))
	})
	b.conn.SetReconnectHandler(func(*nats.Conn) { state(true, nil) })
	defer b.conn.SetDisconnectErrHandler(nil)
	defer b.conn.SetReconnectHandler(nil)
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = b.conn.FlushWithContext(fctx)
	cancel()
	if err == nil {
		h.HandleBrokerState(true, nil)
	} else {
		h.HandleBrokerState(false, fmt.Errorf("nats broker: %w: %w", ErrBrokerDown, err))
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case f := <-events:
			f()
		}
	}
}
