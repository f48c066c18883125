package realtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// MemoryBroker is a Broker within one process: the default of a single
// node, and a test double for several hubs in one process. SetDown simulates
// an outage. The zero value is not usable; call NewMemoryBroker.
type MemoryBroker struct {
	mu       sync.Mutex // guards the fields below
	channels map[string]*memChannel
	handlers map[int]BrokerHandler
	nextID   int
	down     bool
	epoch    string

	deliverMu sync.Mutex // held while calling handlers, taken under mu
}

type memChannel struct {
	seq     uint64
	hist    []Publication // oldest first, at most the publish's HistorySize
	expires time.Time
}

var _ Broker = (*MemoryBroker)(nil)

// NewMemoryBroker returns an empty broker with a fresh epoch.
func NewMemoryBroker() *MemoryBroker {
	return &MemoryBroker{channels: map[string]*memChannel{}, handlers: map[int]BrokerHandler{}, epoch: newEpoch()}
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SetDown simulates an outage (down=true: Publish and History fail, the
// subscribers are told the broker is down) and a recovery. A recovery after
// an outage starts a new epoch with empty histories when lose is true, like
// a Redis restart without persistence.
func (b *MemoryBroker) SetDown(down, lose bool) {
	b.mu.Lock()
	if b.down == down {
		b.mu.Unlock()
		return
	}
	b.down = down
	if !down && lose {
		b.epoch = newEpoch()
		b.channels = map[string]*memChannel{}
	}
	hs := b.handlerList()
	b.deliverMu.Lock()
	b.mu.Unlock()
	defer b.deliverMu.Unlock()
	for _, h := range hs {
		if down {
			h.HandleBrokerState(false, ErrBrokerDown)
		} else {
			h.HandleBrokerState(true, nil)
		}
	}
}

func (b *MemoryBroker) handlerList() []BrokerHandler {
	hs := make([]BrokerHandler, 0, len(b.handlers))
	for _, h := range b.handlers {
		hs = append(hs, h)
	}
	return hs
}

// Publish implements Broker.
func (b *MemoryBroker) Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (Position, error) {
	if err := ctx.Err(); err != nil {
		return Position{}, err
	}
	now := time.Now()
	b.mu.Lock()
	if b.down {
		b.mu.Unlock()
		return Position{}, fmt.Errorf("memory broker: %w", ErrBrokerDown)
	}
	p := Publication{Channel: channel, Data: data, Time: now}
	if opts.HistorySize > 0 {
		c := b.channel(channel, now)
		c.seq++
		p.Position = Position{Epoch: b.epoch, Seq: c.seq}
		c.hist = append(c.hist, p)
		if over := len(c.hist) - opts.HistorySize; over > 0 {
			c.hist = append(c.hist[:0:0], c.hist[over:]...)
		}
		ttl := opts.HistoryTTL
		if ttl <= 0 {
			ttl = defaultHistoryTTL
		}
		c.expires = now.Add(ttl)
	}
	hs := b.handlerList()
	b.deliverMu.Lock()
	b.mu.Unlock()
	defer b.deliverMu.Unlock()
	for _, h := range hs {
		h.HandlePublication(p)
	}
	return p.Position, nil
}

// channel returns the live state of name, dropping an expired one.
func (b *MemoryBroker) channel(name string, now time.Time) *memChannel {
	c := b.channels[name]
	if c != nil && now.After(c.expires) {
		c = nil
	}
	if c == nil {
		c = &memChannel{}
		b.channels[name] = c
	}
	return c
}

// Subscribe implements Broker.
func (b *MemoryBroker) Subscribe(ctx context.Context, h BrokerHandler) error {
	b.mu.Lock()
	id := b.nextID
	b.nextID++
	b.handlers[id] = h
	down := b.down
	b.deliverMu.Lock()
	b.mu.Unlock()
	if !down {
		h.HandleBrokerState(true, nil)
	}
	b.deliverMu.Unlock()
	<-ctx.Done()
	b.mu.Lock()
	delete(b.handlers, id)
	b.mu.Unlock()
	return ctx.Err()
}

// History implements Broker.
func (b *MemoryBroker) History(ctx context.Context, channel string, since Position) ([]Publication, Position, error) {
	if err := ctx.Err(); err != nil {
		return nil, Position{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down {
		return nil, Position{}, fmt.Errorf("memory broker: %w", ErrBrokerDown)
	}
	c := b.channels[channel]
	if c != nil && time.Now().After(c.expires) {
		c = nil
	}
	cur := Position{Epoch: b.epoch}
	var hist []Publication
	if c != nil {
		cur.Seq = c.seq
		hist = c.hist
	}
	pubs, err := historySince(hist, cur, since)
	return pubs, cur, err
}

// historySince selects the messages of hist (oldest first, ending at cur)
// after since, or reports ErrUnrecoverable.
func historySince(hist []Publication, cur, since Position) ([]Publication, error) {
	if since.Epoch != cur.Epoch && !(since.Epoch == "" && since.Seq == 0) {
		return nil, fmt.Errorf("%w: epoch changed from %q to %q", ErrUnrecoverable, since.Epoch, cur.Epoch)
	}
	if since.Seq > cur.Seq {
		return nil, fmt.Errorf("%w: position %d is ahead of the channel (%d)", ErrUnrecoverable, since.Seq, cur.Seq)
	}
	if since.Seq == cur.Seq {
		return nil, nil
	}
	if len(hist) == 0 || hist[0].Position.Seq > since.Seq+1 {
		return nil, fmt.Errorf("%w: %d messages after %d, history starts later", ErrUnrecoverable, cur.Seq-since.Seq, since.Seq)
	}
	var out []Publication
	for _, p := range hist {
		if p.Position.Seq > since.Seq {
			out = append(out, p)
		}
	}
	return out, nil
}
