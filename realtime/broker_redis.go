package realtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisBroker is a Broker over Redis: publications travel on one Redis
// pub/sub channel that every node subscribes to, and each channel's sequence
// number, epoch and bounded history live in Redis keys, updated atomically
// with the publish by a Lua script.
//
// Redis pub/sub keeps nothing for a disconnected subscriber: the Hub fills
// the gaps from the history after a reconnect. A Redis restart without
// persistence loses the histories and sequence numbers; the channels then
// start a new epoch and the subscribers are told to resync.
type RedisBroker struct {
	client  redis.UniversalClient
	prefix  string
	metaTTL time.Duration
}

// RedisBrokerConfig configures a RedisBroker. The zero value works.
type RedisBrokerConfig struct {
	// Prefix starts every Redis key and the pub/sub channel name. Default
	// "scaleout:rt".
	Prefix string
	// MetaTTL is how long a channel's sequence number and epoch live after
	// its last publication. Default 24 hours.
	MetaTTL time.Duration
}

var _ Broker = (*RedisBroker)(nil)

// NewRedisBroker returns a broker using client, which must not be a
// cluster client (the pub/sub channel is not sharded). Give it a client
// that does not retry commands (redis.Options.MaxRetries = -1) and has
// short timeouts: a publish runs a script that assigns the channel's next
// sequence number, and a retry after a timeout that in fact reached Redis
// would publish the message twice.
func NewRedisBroker(client redis.UniversalClient, cfg RedisBrokerConfig) *RedisBroker {
	if cfg.Prefix == "" {
		cfg.Prefix = "scaleout:rt"
	}
	if cfg.MetaTTL <= 0 {
		cfg.MetaTTL = 24 * time.Hour
	}
	return &RedisBroker{client: client, prefix: cfg.Prefix, metaTTL: cfg.MetaTTL}
}

// publishScript assigns the next sequence number, appends the message to
// the bounded history, and publishes it when ARGV[9] is "1".
// KEYS: meta hash, history list. ARGV: pubsub channel, channel, data, size,
// history ttl ms, epoch candidate, time ns, meta ttl ms, publish flag.
var publishScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
local msg = ARGV[2] .. '\n' .. epoch .. '\n' .. string.format('%d', seq) .. '\n' .. ARGV[7] .. '\n' .. ARGV[3]
redis.call('RPUSH', KEYS[2], msg)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if ARGV[9] == '1' then
  redis.call('PUBLISH', ARGV[1], msg)
end
return {epoch, seq}
`)

func (b *RedisBroker) pubsubChannel() string { return b.prefix + ":pub" }

func (b *RedisBroker) keys(channel string) []string {
	return []string{b.prefix + ":{" + channel + "}:meta", b.prefix + ":{" + channel + "}:hist"}
}

// Publish implements Broker.
func (b *RedisBroker) Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (Position, error) {
	return b.publish(ctx, channel, data, opts, true)
}

func (b *RedisBroker) publish(ctx context.Context, channel string, data []byte, opts PublishOptions, send bool) (Position, error) {
	now := time.Now()
	if opts.HistorySize <= 0 {
		if !send {
			return Position{}, nil
		}
		msg := encodeWire(Publication{Channel: channel, Data: data, Time: now})
		if err := b.client.Publish(ctx, b.pubsubChannel(), msg).Err(); err != nil {
			return Position{}, fmt.Errorf("redis broker: publishing: %w: %w", ErrBrokerDown, err)
		}
		return Position{}, nil
	}
	ttl := opts.HistoryTTL
	if ttl <= 0 {
		ttl = defaultHistoryTTL
	}
	flag := "0"
	if send {
		flag = "1"
	}
	res, err := publishScript.Run(ctx, b.client, b.keys(channel),
		b.pubsubChannel(), channel, data, opts.HistorySize, ttl.Milliseconds(),
		newEpoch(), now.UnixNano(), b.metaTTL.Milliseconds(), flag).Slice()
	if err != nil {
		return Position{}, fmt.Errorf("redis broker: publishing: %w: %w", ErrBrokerDown, err)
	}
	if len(res) != 2 {
		return Position{}, fmt.Errorf("redis broker: publish script returned %d values", len(res))
	}
	epoch, _ := res[0].(string)
	seq, _ := res[1].(int64)
	return Position{Epoch: epoch, Seq: uint64(seq)}, nil
}

// History implements Broker.
func (b *RedisBroker) History(ctx context.Context, channel string, since Position) ([]Publication, Position, error) {
	k := b.keys(channel)
	pipe := b.client.TxPipeline()
	meta := pipe.HMGet(ctx, k[0], "e", "s")
	list := pipe.LRange(ctx, k[1], 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, Position{}, fmt.Errorf("redis broker: reading history: %w: %w", ErrBrokerDown, err)
	}
	var cur Position
	if v := meta.Val(); len(v) == 2 {
		cur.Epoch, _ = v[0].(string)
		if s, ok := v[1].(string); ok {
			cur.Seq, _ = strconv.ParseUint(s, 10, 64)
		}
	}
	if cur.Epoch == "" {
		// No publication yet (or the meta expired): the channel is empty.
		if since.Seq == 0 {
			return nil, cur, nil
		}
		return nil, cur, fmt.Errorf("%w: channel has no sequence (expired or broker restarted)", ErrUnrecoverable)
	}
	hist := make([]Publication, 0, len(list.Val()))
	for _, s := range list.Val() {
		p, err := decodeWire([]byte(s))
		if err != nil {
			return nil, cur, fmt.Errorf("redis broker: history of %q: %w", channel, err)
		}
		hist = append(hist, p)
	}
	pubs, err := historySince(hist, cur, since)
	return pubs, cur, err
}

// Subscribe implements Broker.
func (b *RedisBroker) Subscribe(ctx context.Context, h BrokerHandler) error {
	ps := b.client.Subscribe(ctx, b.pubsubChannel())
	defer ps.Close()
	up := false
	backoff := 50 * time.Millisecond
	for {
		msg, err := ps.ReceiveTimeout(ctx, 3*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if err = ps.Ping(ctx); err == nil {
					continue
				}
			}
			if up {
				up = false
				h.HandleBrokerState(false, fmt.Errorf("redis broker: %w: %w", ErrBrokerDown, err))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && !up {
				up = true
				backoff = 50 * time.Millisecond
				h.HandleBrokerState(true, nil)
			}
		case *redis.Message:
			p, err := decodeWire([]byte(m.Payload))
			if err != nil {
				continue
			}
			h.HandlePublication(p)
		}
	}
}
