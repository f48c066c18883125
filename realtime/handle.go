package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// handle acts on one client text message.
func (c *conn) handle(msg []byte) {
	f, err := ParseClientFrame(msg)
	if err != nil {
		var probe struct {
			ID uint64 `json:"id"`
		}
		_ = json.Unmarshal(msg, &probe)
		c.replyError(probe.ID, "", CodeBadRequest, err.Error())
		return
	}
	switch f.Op {
	case OpSubscribe:
		c.subscribe(f)
	case OpUnsubscribe:
		c.unsubscribe(f)
	case OpPublish:
		c.publish(f)
	case OpPresence:
		c.presence(f)
	}
}

func (c *conn) reply(f ServerFrame) {
	if f.ID == 0 && f.Error == nil {
		return
	}
	c.send(textFrame(marshalReply(f)))
}

func (c *conn) replyError(id uint64, channel, code, msg string) {
	c.send(textFrame(marshalReply(ServerFrame{ID: id, Channel: channel, Error: &ReplyError{Code: code, Message: msg}})))
}

func (c *conn) subscribe(f ClientFrame) {
	h := c.h
	if !c.claims.allows(f.Channel) {
		c.replyError(f.ID, f.Channel, CodeForbidden, fmt.Sprintf("not allowed to subscribe to %q", f.Channel))
		return
	}
	c.mu.Lock()
	if c.subs[f.Channel] != nil {
		c.mu.Unlock()
		c.reply(ServerFrame{ID: f.ID, Channel: f.Channel})
		return
	}
	if len(c.subs) >= h.cfg.MaxSubscriptions {
		c.mu.Unlock()
		c.replyError(f.ID, f.Channel, CodeTooMany, fmt.Sprintf("at most %d subscriptions per connection", h.cfg.MaxSubscriptions))
		return
	}
	s := &subscription{channel: f.Channel, recovering: f.Since != nil}
	if c.subs == nil {
		c.subs = map[string]*subscription{}
	}
	c.subs[f.Channel] = s
	c.mu.Unlock()

	h.mu.Lock()
	subs := h.channels[f.Channel]
	if subs == nil {
		subs = map[*conn]*subscription{}
		h.channels[f.Channel] = subs
	}
	subs[c] = s
	first := len(subs) == 1
	h.mu.Unlock()
	if first {
		h.seedPosition(f.Channel)
	}
	if h.presence != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h.presence.add(ctx, c, f.Channel)
		cancel()
	}
	if f.Since == nil {
		c.reply(ServerFrame{ID: f.ID, Channel: f.Channel})
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	pubs, cur, err := h.broker.History(ctx, f.Channel, *f.Since)
	cancel()
	recovered := err == nil
	if recovered {
		h.m.recovered.Add(uint64(len(pubs)))
	} else if !errors.Is(err, ErrUnrecoverable) && !errors.Is(err, ErrNoHistory) {
		h.log.Warn("recovering a subscription", "channel", f.Channel, "err", err)
	}
	reply := marshalReply(ServerFrame{ID: f.ID, Channel: f.Channel, Epoch: cur.Epoch, Seq: cur.Seq, Recovered: &recovered})
	ok := true
	c.mu.Lock()
	ok = ok && c.enqueueLocked(textFrame(reply))
	if recovered {
		s.last = *f.Since
		if s.last.Epoch == "" {
			s.last.Epoch = cur.Epoch
		}
		for _, p := range pubs {
			ok = ok && c.enqueueLocked(textFrame(appendChannelMessage(nil, p.Channel, p.Position, p.Data)))
			s.last = p.Position
		}
	}
	for _, pp := range s.pending {
		if pp.pos.Seq != 0 && pp.pos.Epoch == s.last.Epoch && pp.pos.Seq <= s.last.Seq {
			continue
		}
		ok = ok && c.enqueueLocked(pp.frame)
		if pp.pos.Seq != 0 {
			s.last = pp.pos
		}
	}
	s.pending = nil
	s.recovering = false
	c.mu.Unlock()
	if !ok {
		c.slow()
	}
}

func (c *conn) unsubscribe(f ClientFrame) {
	h := c.h
	c.mu.Lock()
	_, had := c.subs[f.Channel]
	delete(c.subs, f.Channel)
	c.mu.Unlock()
	if had {
		h.mu.Lock()
		h.removeSubLocked(f.Channel, c)
		h.mu.Unlock()
		if h.presence != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			h.presence.remove(ctx, c, []string{f.Channel})
			cancel()
		}
	}
	c.reply(ServerFrame{ID: f.ID, Channel: f.Channel})
}

func (c *conn) publish(f ClientFrame) {
	if c.anon || !c.claims.Publish || !c.claims.allows(f.Channel) {
		c.replyError(f.ID, f.Channel, CodeForbidden, fmt.Sprintf("not allowed to publish to %q", f.Channel))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pos, err := c.h.Publish(ctx, f.Channel, f.Data)
	if err != nil {
		c.replyError(f.ID, f.Channel, CodeUnavailable, err.Error())
		return
	}
	c.reply(ServerFrame{ID: f.ID, Channel: f.Channel, Epoch: pos.Epoch, Seq: pos.Seq})
}

func (c *conn) presence(f ClientFrame) {
	if !c.claims.allows(f.Channel) {
		c.replyError(f.ID, f.Channel, CodeForbidden, fmt.Sprintf("not allowed to see presence of %q", f.Channel))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p, err := c.h.Presence(ctx, f.Channel)
	if err != nil {
		c.replyError(f.ID, f.Channel, CodeUnavailable, err.Error())
		return
	}
	c.reply(ServerFrame{ID: f.ID, Channel: f.Channel, Presence: &p})
}
