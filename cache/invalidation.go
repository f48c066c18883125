package cache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// subscribe opens a pub/sub connection on the invalidation channel and
// waits for Redis to confirm the subscription, so that every message
// published after it returns is delivered.
func (c *Cache) subscribe(ctx context.Context) (*redis.PubSub, error) {
	ps := c.rds.client.Subscribe(ctx)
	if err := ps.Subscribe(ctx, c.rds.channel); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("cache: subscribing to %s: %w", c.rds.channel, err)
	}
	wait := max(c.cfg.HealthInterval, time.Second)
	for {
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("cache: subscribing to %s: %w", c.rds.channel, err)
		}
		if s, ok := msg.(*redis.Subscription); ok && s.Kind == "subscribe" {
			return ps, nil
		}
	}
}

// subscriber owns the invalidation subscription for the life of the cache:
// it applies messages from other nodes, checks the connection when it is
// idle, reconnects after failures, and runs the recovery after an outage.
func (c *Cache) subscriber(ctx context.Context, ps *redis.PubSub) {
	pause := 10 * time.Millisecond
	maxPause := min(c.cfg.HealthInterval, 250*time.Millisecond)
	for {
		var err error
		if ps == nil {
			ps, err = c.subscribe(ctx)
		}
		if err == nil {
			pause = 10 * time.Millisecond
			c.ps.Store(ps)
			if ctx.Err() != nil { // Close ran before the Store
				_ = ps.Close()
				return
			}
			err = c.receive(ctx, ps)
			c.ps.Store(nil)
			_ = ps.Close()
			ps = nil
		}
		if ctx.Err() != nil {
			return
		}
		c.rds.errors.Add(1)
		c.subLost.Store(true) // before the outage: recover must see it
		c.markOutage(err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		pause = min(pause*2, maxPause)
	}
}

// receive handles one live subscription until it fails.
func (c *Cache) receive(ctx context.Context, ps *redis.PubSub) error {
	// Recovery failures leave the subscription up (it may be fine while
	// commands fail); attempts are spaced so that messages keep flowing.
	var nextRecovery time.Time
	tryRecover := func() {
		if c.outageStart.Load() == 0 || time.Now().Before(nextRecovery) {
			return
		}
		if err := c.recover(ctx); err != nil {
			nextRecovery = time.Now().Add(min(c.cfg.HealthInterval, 250*time.Millisecond))
			c.cfg.Logger.Debug("cache: recovery failed", "cache", c.cfg.Name, "err", err)
		}
	}
	tryRecover()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, c.cfg.HealthInterval)
		if err != nil {
			var ne net.Error
			if ctx.Err() == nil && !pinged && errors.As(err, &ne) && ne.Timeout() {
				// Idle: make Redis prove the connection is alive.
				if err := ps.Ping(ctx); err != nil {
					return fmt.Errorf("cache: pinging redis: %w", err)
				}
				pinged = true
				continue
			}
			return fmt.Errorf("cache: receiving invalidations: %w", err)
		}
		pinged = false
		if m, ok := msg.(*redis.Message); ok {
			c.apply(m.Payload)
		}
		// The connection works: if a command failed meanwhile, recover.
		tryRecover()
	}
}

// apply handles an invalidation message from another node.
func (c *Cache) apply(payload string) {
	m, err := decodeMessage([]byte(payload))
	if err != nil {
		c.rds.errors.Add(1)
		c.cfg.Logger.Warn("cache: dropping undecodable invalidation", "cache", c.cfg.Name, "err", err)
		return
	}
	if m.node == c.node {
		return
	}
	defer c.invalReceived.Add(1) // after applying: tests wait on it
	switch m.kind {
	case msgKeys:
		for _, k := range m.names {
			c.slot(k).Add(1)
			c.mem.delete(k)
		}
	case msgTags:
		c.tagSeq.Add(1)
		c.mem.invalidateTags(m.names)
	case msgFlush:
		c.tagSeq.Add(1)
		c.mem.flush()
	}
}

// recover ends an outage: it replays to Redis the keys and tags written
// during it (deleting them there and telling the other nodes), flushes the
// memory layer if the subscription broke (it may then hold values whose
// invalidations were missed), and resumes using Redis. An outage that only
// failed commands, with the subscription intact, missed no invalidation and
// keeps the memory layer.
func (c *Cache) recover(ctx context.Context) error {
	for range 10 {
		c.dirtyMu.Lock()
		keys := slices.Collect(maps.Keys(c.dirtyKeys))
		tags := slices.Collect(maps.Keys(c.dirtyTags))
		overflow := c.dirtyOverflow
		c.dirtyMu.Unlock()

		if overflow {
			msg := encodeMessage(message{kind: msgFlush, node: c.node})
			if err := c.rds.flushAll(ctx, msg); err != nil {
				return err
			}
			c.invalSent.Add(1)
		}
		for chunk := range slices.Chunk(keys, 1000) {
			msg := encodeMessage(message{kind: msgKeys, node: c.node, names: chunk})
			if err := c.rds.del(ctx, chunk, msg); err != nil {
				return err
			}
			c.invalSent.Add(1)
		}
		for chunk := range slices.Chunk(tags, 100) {
			msg := encodeMessage(message{kind: msgTags, node: c.node, names: chunk})
			if err := c.rds.invalidateTags(ctx, chunk, msg); err != nil {
				return err
			}
			c.invalSent.Add(1)
		}

		c.dirtyMu.Lock()
		for _, k := range keys {
			delete(c.dirtyKeys, k)
		}
		for _, t := range tags {
			delete(c.dirtyTags, t)
		}
		if overflow {
			c.dirtyOverflow = false
		}
		done := len(c.dirtyKeys) == 0 && len(c.dirtyTags) == 0 && !c.dirtyOverflow
		flushed := false
		if done {
			if c.subLost.Swap(false) {
				c.tagSeq.Add(1)
				c.mem.flush()
				flushed = true
			}
			c.outageStart.Store(0)
		}
		c.dirtyMu.Unlock()
		if done {
			c.recoveries.Add(1)
			c.cfg.Logger.Info("cache: redis reachable again", "cache", c.cfg.Name,
				"memory_flushed", flushed, "replayed_keys", len(keys), "replayed_tags", len(tags),
				"deleted_prefix", overflow)
			return nil
		}
	}
	return errors.New("cache: recovery could not catch up with writes")
}

// refreshServerStats keeps the Redis layer's server-wide figures current.
func (c *Cache) refreshServerStats(ctx context.Context) {
	t := time.NewTicker(c.cfg.StatsInterval)
	defer t.Stop()
	for {
		if c.redisUsable() {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			if err := c.rds.readServerStats(rctx); err != nil && ctx.Err() == nil {
				c.cfg.Logger.Debug("cache: reading redis stats", "cache", c.cfg.Name, "err", err)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
