package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config configures a Hub. The zero value works: a single node with an
// in-memory broker, local presence, and no token secret (so only anonymous
// connections, if AllowAnonymous).
type Config struct {
	// Broker carries messages between nodes. By default a new MemoryBroker,
	// which reaches this node only.
	Broker Broker
	// Presence, when set, keeps presence in Redis so that it spans nodes.
	// By default presence covers this node's connections only.
	Presence redis.UniversalClient
	// PresenceTTL is how long a node's presence entries outlive its last
	// heartbeat; heartbeats are sent every third of it. Default 15s.
	PresenceTTL time.Duration
	// PresencePrefix starts the presence keys in Redis. Default
	// "scaleout:rt".
	PresencePrefix string
	// Secret is the HMAC key of connection tokens (see SignToken). By
	// default there is none and every token is refused.
	Secret []byte
	// AllowAnonymous lets connections without a token in, with the
	// channels of AnonymousChannels and no publishing. By default a token
	// is required.
	AllowAnonymous bool
	// AnonymousChannels are the channel patterns (as in Claims.Channels)
	// anonymous connections may subscribe to. Default none.
	AnonymousChannels []string
	// SendQueue is how many frames may wait to be written to one
	// connection; a connection whose queue is full is closed with
	// CloseSlowClient. Default 256.
	SendQueue int
	// WriteTimeout bounds one write to a connection. Default 10s.
	WriteTimeout time.Duration
	// PingInterval is how often the hub pings each connection. Default 25s.
	PingInterval time.Duration
	// PongTimeout is how long after a ping a silent connection is closed as
	// dead. Default 10s.
	PongTimeout time.Duration
	// MaxMessageSize is the largest client message accepted, in bytes;
	// larger ones close the connection with CloseTooBig. Default 64 KiB.
	MaxMessageSize int
	// MaxSubscriptions is how many channels one connection may subscribe
	// to. Default 128.
	MaxSubscriptions int
	// HistorySize is how many recent messages each channel keeps for
	// recovery. Default 100; negative keeps none (messages then carry no
	// sequence number).
	HistorySize int
	// HistoryTTL is how long a channel's history lives after its last
	// message. Default 5 minutes.
	HistoryTTL time.Duration
	// NodeID names this node in presence entries and metrics. Default
	// hostname-pid.
	NodeID string
	// ServerKeepsHijackedConns tells the hub that the fasthttp.Server
	// serving it has KeepHijackedConns set. The hub then returns from the
	// hijack handler at once and serves the socket from its own goroutine,
	// so the server's request context and read buffer are freed: about
	// 9 KB less per idle connection. By default the hub keeps the hijack
	// handler running for the life of the connection, as fasthttp requires
	// when it closes hijacked connections itself.
	ServerKeepsHijackedConns bool
	// Logger receives the hub's logs. Default slog.Default().
	Logger *slog.Logger
}

// Hub holds this node's WebSocket connections and delivers messages to
// them. Create it with NewHub, run it with Run, mount ServeFastHTTP on the
// WebSocket path and PublishHandler on the admin API.
type Hub struct {
	cfg    Config
	broker Broker
	log    *slog.Logger

	mu       sync.RWMutex // guards channels, users, conns
	channels map[string]map[*conn]*subscription
	users    map[string]map[*conn]struct{}
	conns    map[*conn]struct{}

	// posMu guards lastPos, the last position delivered per channel with
	// local subscribers. A zero Position means "nothing yet".
	posMu   sync.Mutex
	lastPos map[string]Position

	nextConnID atomic.Uint64
	draining   atomic.Bool
	brokerUp   atomic.Bool
	running    atomic.Bool

	m hubMetrics

	presence *redisPresence
}

// ErrBadData means a payload to publish is not valid JSON.
var ErrBadData = errors.New("data is not valid JSON")

// NewHub returns a hub configured by cfg, with defaults applied.
func NewHub(cfg Config) (*Hub, error) {
	if cfg.Broker == nil {
		cfg.Broker = NewMemoryBroker()
	}
	if cfg.PresenceTTL <= 0 {
		cfg.PresenceTTL = 15 * time.Second
	}
	if cfg.PresencePrefix == "" {
		cfg.PresencePrefix = "scaleout:rt"
	}
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = 256
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 25 * time.Second
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = 10 * time.Second
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 64 << 10
	}
	if cfg.MaxSubscriptions <= 0 {
		cfg.MaxSubscriptions = 128
	}
	switch {
	case cfg.HistorySize == 0:
		cfg.HistorySize = 100
	case cfg.HistorySize < 0:
		cfg.HistorySize = 0
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = defaultHistoryTTL
	}
	if cfg.NodeID == "" {
		host, _ := os.Hostname()
		cfg.NodeID = host + "-" + strconv.Itoa(os.Getpid())
	}
	if strings.ContainsAny(cfg.NodeID, "|\n") {
		return nil, fmt.Errorf("realtime: node id %q contains '|' or a newline", cfg.NodeID)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Hub{
		cfg:      cfg,
		broker:   cfg.Broker,
		log:      cfg.Logger.With("component", "realtime", "node", cfg.NodeID),
		channels: map[string]map[*conn]*subscription{},
		users:    map[string]map[*conn]struct{}{},
		conns:    map[*conn]struct{}{},
		lastPos:  map[string]Position{},
	}
	h.m.init()
	if cfg.Presence != nil {
		h.presence = &redisPresence{client: cfg.Presence, prefix: cfg.PresencePrefix, ttl: cfg.PresenceTTL, node: cfg.NodeID}
	}
	return h, nil
}

// Run subscribes the hub to the broker, pings connections and sends
// presence heartbeats until ctx ends. It returns nil when ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	if !h.running.CompareAndSwap(false, true) {
		return errors.New("realtime: hub already running")
	}
	defer h.running.Store(false)
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = h.broker.Subscribe(ctx, brokerHandler{h})
	})
	wg.Go(func() { h.pingLoop(ctx) })
	if h.presence != nil {
		wg.Go(func() { h.presenceLoop(ctx) })
	}
	wg.Wait()
	return nil
}

// Publish sends data (a JSON value) to every subscriber of channel on every
// node, and returns the message's position in the channel (zero when the
// hub keeps no history). When the broker is unavailable the message still
// reaches this node's subscribers, and the error wraps ErrBrokerDown.
func (h *Hub) Publish(ctx context.Context, channel string, data []byte) (Position, error) {
	if err := ValidateChannel(channel); err != nil {
		return Position{}, fmt.Errorf("realtime: publishing: %w", err)
	}
	if !json.Valid(data) {
		return Position{}, fmt.Errorf("realtime: publishing to %q: %w", channel, ErrBadData)
	}
	h.m.published.Add(1)
	pos, err := h.broker.Publish(ctx, channel, data, PublishOptions{HistorySize: h.cfg.HistorySize, HistoryTTL: h.cfg.HistoryTTL})
	if err != nil {
		h.m.localOnly.Add(1)
		p := Publication{Channel: channel, Data: data, Time: time.Now(), Position: pos}
		if pos.Seq != 0 {
			// Kept in the history but not carried (NATS down, Redis up):
			// deliver it here in sequence; other nodes recover it later.
			h.handlePublication(p)
		} else {
			h.deliver(p)
		}
		return pos, fmt.Errorf("realtime: publishing to %q (delivered on this node only): %w", channel, err)
	}
	return pos, nil
}

// PublishUser sends data (a JSON value) to every connection of user on
// every node. When the broker is unavailable the message still reaches the
// user's connections on this node, and the error wraps ErrBrokerDown.
func (h *Hub) PublishUser(ctx context.Context, user string, data []byte) error {
	if user == "" {
		return errors.New("realtime: publishing to a user: empty user")
	}
	if !json.Valid(data) {
		return fmt.Errorf("realtime: publishing to user %q: %w", user, ErrBadData)
	}
	h.m.published.Add(1)
	ch := userChannelPrefix + user
	if _, err := h.broker.Publish(ctx, ch, data, PublishOptions{}); err != nil {
		h.m.localOnly.Add(1)
		h.deliver(Publication{Channel: ch, Data: data, Time: time.Now()})
		return fmt.Errorf("realtime: publishing to user %q (delivered on this node only): %w", user, err)
	}
	return nil
}

// brokerHandler adapts the hub to BrokerHandler without exporting the
// methods on Hub.
type brokerHandler struct{ h *Hub }

func (b brokerHandler) HandlePublication(p Publication) { b.h.handlePublication(p) }
func (b brokerHandler) HandleBrokerState(up bool, err error) {
	b.h.handleBrokerState(up, err)
}

// handlePublication puts broker messages in sequence order per channel,
// fills gaps from the history, and delivers.
func (h *Hub) handlePublication(p Publication) {
	h.m.received.Add(1)
	if !p.Time.IsZero() {
		h.m.lag.Observe(time.Since(p.Time).Seconds())
	}
	if p.Position.Seq == 0 || strings.HasPrefix(p.Channel, userChannelPrefix) {
		h.deliver(p)
		return
	}
	h.posMu.Lock()
	defer h.posMu.Unlock()
	if !h.hasLocal(p.Channel) {
		delete(h.lastPos, p.Channel)
		return
	}
	last, known := h.lastPos[p.Channel]
	if known && (last.Epoch == p.Position.Epoch || last == Position{}) {
		if p.Position.Seq <= last.Seq {
			h.m.duplicates.Add(1)
			return
		}
		if p.Position.Seq > last.Seq+1 {
			h.fillGap(p.Channel, last, p.Position)
		}
	} else if known {
		h.m.lostGaps.Add(1)
		h.sendResync(p.Channel, "epoch changed: the broker lost the channel's history")
	}
	h.lastPos[p.Channel] = p.Position
	h.deliver(p)
}

// fillGap delivers the messages of channel between last and next (both
// excluded) from the history, or counts them lost and tells subscribers to
// resync.
func (h *Hub) fillGap(channel string, last, next Position) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pubs, _, err := h.broker.History(ctx, channel, last)
	if err != nil {
		h.m.lostGaps.Add(1)
		h.m.lostMessages.Add(next.Seq - last.Seq - 1)
		h.log.Warn("messages lost on channel", "channel", channel, "from", last.Seq+1, "to", next.Seq-1, "err", err)
		h.sendResync(channel, "messages lost: "+err.Error())
		return
	}
	for _, p := range pubs {
		if p.Position.Seq >= next.Seq {
			break
		}
		h.m.recovered.Add(1)
		h.lastPos[channel] = p.Position
		h.deliver(p)
	}
}

// handleBrokerState records outages and, on return, recovers what every
// locally subscribed channel missed.
func (h *Hub) handleBrokerState(up bool, err error) {
	was := h.brokerUp.Swap(up)
	if !up {
		if was {
			h.m.outages.Add(1)
			h.log.Warn("broker unavailable; delivering locally only", "err", err)
		}
		return
	}
	if was {
		return
	}
	h.log.Info("broker subscription established")
	h.posMu.Lock()
	defer h.posMu.Unlock()
	for ch, last := range h.lastPos {
		if !h.hasLocal(ch) {
			delete(h.lastPos, ch)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		pubs, cur, err := h.broker.History(ctx, ch, last)
		cancel()
		if err != nil {
			h.m.lostGaps.Add(1)
			if cur.Epoch == last.Epoch && cur.Seq > last.Seq {
				h.m.lostMessages.Add(cur.Seq - last.Seq)
			}
			h.log.Warn("messages missed during the broker outage cannot be recovered", "channel", ch, "err", err)
			h.sendResync(ch, "messages lost during a broker outage: "+err.Error())
			delete(h.lastPos, ch)
			continue
		}
		for _, p := range pubs {
			h.m.recovered.Add(1)
			h.lastPos[ch] = p.Position
			h.deliver(p)
		}
	}
}

// seedPosition records channel's current position when the channel gets
// its first local subscriber, so that messages after it that arrive out of
// order or not at all are noticed.
func (h *Hub) seedPosition(channel string) {
	if h.cfg.HistorySize == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, cur, err := h.broker.History(ctx, channel, Position{Seq: ^uint64(0)})
	cancel()
	if err != nil && cur == (Position{}) && !errors.Is(err, ErrUnrecoverable) {
		return
	}
	h.posMu.Lock()
	defer h.posMu.Unlock()
	if _, known := h.lastPos[channel]; !known {
		h.lastPos[channel] = cur
	}
}

func (h *Hub) hasLocal(channel string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.channels[channel]) > 0
}

// deliver queues p to this node's connections it is meant for.
func (h *Hub) deliver(p Publication) {
	if user, ok := strings.CutPrefix(p.Channel, userChannelPrefix); ok {
		frame := textFrame(appendUserMessage(nil, user, p.Data))
		h.mu.RLock()
		defer h.mu.RUnlock()
		for c := range h.users[user] {
			c.send(frame)
		}
		return
	}
	var frame []byte
	h.mu.RLock()
	defer h.mu.RUnlock()
	subs := h.channels[p.Channel]
	if len(subs) == 0 {
		return
	}
	frame = textFrame(appendChannelMessage(make([]byte, 0, 96+len(p.Channel)+len(p.Data)), p.Channel, p.Position, p.Data))
	for c, s := range subs {
		c.sendPublication(s, p.Position, frame)
	}
}

// sendResync tells every local subscriber of channel to resync.
func (h *Hub) sendResync(channel, reason string) {
	frame := textFrame(appendResync(nil, channel, reason))
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.channels[channel] {
		c.send(frame)
	}
}

// Drain stops taking connections and closes every connection with
// CloseReconnect so that clients reconnect to another node. It returns when
// all connections are closed or ctx ends, when it cuts the rest.
func (h *Hub) Drain(ctx context.Context) {
	h.draining.Store(true)
	for _, c := range h.connList() {
		c.closeWith(CloseReconnect, "reconnect")
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		h.mu.RLock()
		n := len(h.conns)
		h.mu.RUnlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			for _, c := range h.connList() {
				c.kill()
			}
			return
		case <-t.C:
		}
	}
}

func (h *Hub) connList() []*conn {
	h.mu.RLock()
	defer h.mu.RUnlock()
	cs := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		cs = append(cs, c)
	}
	return cs
}

// pingLoop pings every connection each PingInterval and closes those
// silent for longer than PingInterval+PongTimeout.
func (h *Hub) pingLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.PingInterval)
	defer t.Stop()
	ping := pingFrame()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		deadline := time.Now().Add(-(h.cfg.PingInterval + h.cfg.PongTimeout)).UnixNano()
		for _, c := range h.connList() {
			if c.lastRead.Load() < deadline {
				h.m.dead.Add(1)
				c.closeWith(CloseNoPong, "no pong")
				continue
			}
			c.send(ping)
		}
	}
}

// Status is a snapshot of the hub's state.
type Status struct {
	NodeID        string `json:"node_id"`
	Connections   int    `json:"connections"`
	Users         int    `json:"users"`
	Channels      int    `json:"channels"`
	Subscriptions int    `json:"subscriptions"`
	BrokerUp      bool   `json:"broker_up"`
	BrokerOutages uint64 `json:"broker_outages"`
	Draining      bool   `json:"draining"`
	// Published counts messages published through this hub, LocalOnly
	// those of them that reached this node only because the broker was
	// down.
	Published uint64 `json:"published"`
	LocalOnly uint64 `json:"local_only"`
	// MessagesIn counts client frames, MessagesOut frames queued to
	// clients.
	MessagesIn  uint64 `json:"messages_in"`
	MessagesOut uint64 `json:"messages_out"`
	// SlowClients counts connections closed because their queue was full,
	// DeadConnections those closed for not answering pings.
	SlowClients     uint64 `json:"slow_clients"`
	DeadConnections uint64 `json:"dead_connections"`
	// Recovered counts messages filled in from history after a gap or an
	// outage; LostGaps counts gaps that could not be filled (subscribers
	// were told to resync) and LostMessages the messages known lost in them.
	Recovered    uint64 `json:"recovered"`
	LostGaps     uint64 `json:"lost_gaps"`
	LostMessages uint64 `json:"lost_messages"`
}

// Status returns a snapshot of the hub's state.
func (h *Hub) Status() Status {
	h.mu.RLock()
	s := Status{NodeID: h.cfg.NodeID, Connections: len(h.conns), Users: len(h.users), Channels: len(h.channels)}
	for _, subs := range h.channels {
		s.Subscriptions += len(subs)
	}
	h.mu.RUnlock()
	s.BrokerUp = h.brokerUp.Load()
	s.BrokerOutages = h.m.outages.Load()
	s.Draining = h.draining.Load()
	s.Published = h.m.published.Load()
	s.LocalOnly = h.m.localOnly.Load()
	s.MessagesIn = h.m.in.Load()
	s.MessagesOut = h.m.out.Load()
	s.SlowClients = h.m.slow.Load()
	s.DeadConnections = h.m.dead.Load()
	s.Recovered = h.m.recovered.Load()
	s.LostGaps = h.m.lostGaps.Load()
	s.LostMessages = h.m.lostMessages.Load()
	return s
}
