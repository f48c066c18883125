package realtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Broker carries publications between the nodes of a cluster and keeps each
// channel's sequence numbers and bounded history. Implementations:
// MemoryBroker, RedisBroker, NATSBroker.
type Broker interface {
	// Publish sends data on channel to every node's subscriber. With
	// opts.HistorySize > 0 it first gives the message the channel's next
	// sequence number and keeps it in the channel's history; otherwise the
	// returned position is zero.
	Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (Position, error)
	// Subscribe delivers every publication on every channel to h until ctx
	// ends, reconnecting after broker failures; it returns ctx's error.
	// Calls to h are made from one goroutine at a time.
	Subscribe(ctx context.Context, h BrokerHandler) error
	// History returns channel's kept messages after since, oldest first,
	// and the channel's current position. It returns an error wrapping
	// ErrUnrecoverable when the history no longer reaches back to since or
	// the epoch changed, and ErrNoHistory when the broker keeps none.
	History(ctx context.Context, channel string, since Position) ([]Publication, Position, error)
}

// BrokerHandler receives what a Broker's Subscribe delivers.
type BrokerHandler interface {
	// HandlePublication is called for every publication, in the order
	// of each channel's sequence numbers as the broker delivers them.
	HandlePublication(p Publication)
	// HandleBrokerState is called with up=true when the subscription is
	// established (first and after every reconnect) and with up=false and
	// the cause when it is lost.
	HandleBrokerState(up bool, err error)
}

// PublishOptions says how a broker keeps a publication.
type PublishOptions struct {
	// HistorySize is how many recent messages of the channel to keep. 0
	// keeps none and gives the message no sequence number.
	HistorySize int
	// HistoryTTL is how long the channel's history lives after its last
	// publication. 0 means the broker's default (5 minutes).
	HistoryTTL time.Duration
}

// Publication is one message on a channel, as brokers deliver it.
type Publication struct {
	// Channel is the channel name; internal names starting with "$u:" carry
	// messages to a user.
	Channel string
	// Position is the message's place in the channel; zero when the
	// message was published without history.
	Position Position
	// Data is the JSON payload.
	Data []byte
	// Time is when the publishing node sent it, for the broker lag metric.
	Time time.Time
}

// Broker errors.
var (
	// ErrUnrecoverable means the missed messages are no longer all in the
	// channel's history (or its epoch changed): the client must resync.
	ErrUnrecoverable = errors.New("history does not reach back to the position")
	// ErrNoHistory means the broker keeps no history.
	ErrNoHistory = errors.New("broker keeps no history")
	// ErrBrokerDown means the broker cannot be reached.
	ErrBrokerDown = errors.New("broker unavailable")
)

const defaultHistoryTTL = 5 * time.Minute

// userChannelPrefix starts the internal channel carrying messages to a user.
const userChannelPrefix = "$u:"

// encodeWire is the form of a publication between nodes:
// channel \n epoch \n seq \n unix-nanos \n data.
func encodeWire(p Publication) []byte {
	b := make([]byte, 0, len(p.Channel)+len(p.Position.Epoch)+len(p.Data)+48)
	b = append(b, p.Channel...)
	b = append(b, '\n')
	b = append(b, p.Position.Epoch...)
	b = append(b, '\n')
	b = strconv.AppendUint(b, p.Position.Seq, 10)
	b = append(b, '\n')
	b = strconv.AppendInt(b, p.Time.UnixNano(), 10)
	b = append(b, '\n')
	return append(b, p.Data...)
}

// decodeWire parses what encodeWire produced (or the Redis script, which
// writes the same form).
func decodeWire(b []byte) (Publication, error) {
	var parts [4][]byte
	for i := range parts {
		j := bytes.IndexByte(b, '\n')
		if j < 0 {
			return Publication{}, fmt.Errorf("decoding broker message: %d of 4 header lines", i)
		}
		parts[i], b = b[:j], b[j+1:]
	}
	var p Publication
	p.Channel = string(parts[0])
	p.Position.Epoch = string(parts[1])
	seq, err := strconv.ParseUint(string(parts[2]), 10, 64)
	if err != nil {
		return Publication{}, fmt.Errorf("decoding broker message: seq: %w", err)
	}
	p.Position.Seq = seq
	ns, err := strconv.ParseInt(string(parts[3]), 10, 64)
	if err != nil {
		return Publication{}, fmt.Errorf("decoding broker message: time: %w", err)
	}
	p.Time = time.Unix(0, ns)
	p.Data = b
	return p, nil
}
