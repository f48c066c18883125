package realtime

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// PresenceInfo is who is subscribed to a channel.
type PresenceInfo struct {
	// Users maps each user id to its number of subscribed connections.
	Users map[string]int `json:"users"`
	// Connections counts all subscribed connections, anonymous included.
	Connections int `json:"connections"`
	// Anonymous counts the subscribed connections without a user.
	Anonymous int `json:"anonymous,omitempty"`
}

// Presence returns who is subscribed to channel: across all nodes when the
// hub keeps presence in Redis (entries of a node that stopped heartbeating
// vanish after Config.PresenceTTL), otherwise on this node.
func (h *Hub) Presence(ctx context.Context, channel string) (PresenceInfo, error) {
	if h.presence != nil {
		return h.presence.get(ctx, channel)
	}
	info := PresenceInfo{Users: map[string]int{}}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.channels[channel] {
		info.Connections++
		if c.anon {
			info.Anonymous++
		} else {
			info.Users[c.claims.User]++
		}
	}
	return info, nil
}

// redisPresence keeps, per channel, a sorted set whose members are
// node|connection|user and whose scores are expiry times in unix millis.
type redisPresence struct {
	client redis.UniversalClient
	prefix string
	ttl    time.Duration
	node   string
}

func (p *redisPresence) key(channel string) string { return p.prefix + ":{" + channel + "}:presence" }

func (p *redisPresence) member(c *conn) string {
	u := c.claims.User
	if c.anon {
		u = ""
	}
	return p.node + "|" + strconv.FormatUint(c.id, 10) + "|" + u
}

func (p *redisPresence) add(ctx context.Context, c *conn, channel string) {
	exp := float64(time.Now().Add(p.ttl).UnixMilli())
	pipe := p.client.Pipeline()
	pipe.ZAdd(ctx, p.key(channel), redis.Z{Score: exp, Member: p.member(c)})
	pipe.PExpire(ctx, p.key(channel), 2*p.ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		c.h.m.presenceErrors.Add(1)
	}
}

func (p *redisPresence) remove(ctx context.Context, c *conn, channels []string) {
	pipe := p.client.Pipeline()
	m := p.member(c)
	for _, ch := range channels {
		pipe.ZRem(ctx, p.key(ch), m)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		c.h.m.presenceErrors.Add(1)
	}
}

func (p *redisPresence) get(ctx context.Context, channel string) (PresenceInfo, error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	pipe := p.client.TxPipeline()
	pipe.ZRemRangeByScore(ctx, p.key(channel), "-inf", "("+now)
	members := pipe.ZRangeByScore(ctx, p.key(channel), &redis.ZRangeBy{Min: now, Max: "+inf"})
	if _, err := pipe.Exec(ctx); err != nil {
		return PresenceInfo{}, fmt.Errorf("realtime: reading presence of %q: %w", channel, err)
	}
	info := PresenceInfo{Users: map[string]int{}}
	for _, m := range members.Val() {
		parts := strings.SplitN(m, "|", 3)
		if len(parts) != 3 {
			continue
		}
		info.Connections++
		if parts[2] == "" {
			info.Anonymous++
		} else {
			info.Users[parts[2]]++
		}
	}
	return info, nil
}

// presenceLoop refreshes this node's presence entries every third of the
// TTL, so that they outlive the node by at most the TTL.
func (h *Hub) presenceLoop(ctx context.Context) {
	p := h.presence
	t := time.NewTicker(p.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.mu.RLock()
		type entry struct {
			key    string
			member string
		}
		var entries []entry
		for ch, subs := range h.channels {
			k := p.key(ch)
			for c := range subs {
				entries = append(entries, entry{k, p.member(c)})
			}
		}
		h.mu.RUnlock()
		exp := float64(time.Now().Add(p.ttl).UnixMilli())
		for len(entries) > 0 {
			n := min(len(entries), 1000)
			pipe := p.client.Pipeline()
			keys := map[string]bool{}
			for _, e := range entries[:n] {
				pipe.ZAdd(ctx, e.key, redis.Z{Score: exp, Member: e.member})
				keys[e.key] = true
			}
			for k := range keys {
				pipe.PExpire(ctx, k, 2*p.ttl)
			}
			if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
				h.m.presenceErrors.Add(1)
				h.log.Warn("presence heartbeat failed", "err", err)
				break
			}
			entries = entries[n:]
		}
	}
}
