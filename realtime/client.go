package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"
)

// Client is a Go client of the hub's protocol, for app code and tests.
// Its methods are safe to call from several goroutines; Next is meant for
// one reader.
type Client struct {
	conn net.Conn
	r    io.Reader

	wmu    sync.Mutex // serializes writes
	nextID atomic.Uint64

	mu      sync.Mutex // guards the fields below
	pending map[uint64]chan ServerFrame
	queue   []ServerFrame // messages and resyncs not yet taken by Next
	err     error         // why the connection ended
	notify  chan struct{} // signalled when queue grows or err is set
	done    chan struct{}
}

// CloseError is how the connection ended: the close code and reason the
// hub sent (Code 1006 when the socket closed without a close frame).
type CloseError struct {
	Code   int
	Reason string
}

// Error implements error.
func (e *CloseError) Error() string {
	return fmt.Sprintf("realtime: connection closed: %d %s", e.Code, e.Reason)
}

// Dial connects to the hub at rawURL (ws://host/path) with token (empty for
// an anonymous connection). A refused token shows as a *CloseError from the
// first call, as browsers see it.
func Dial(ctx context.Context, rawURL, token string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("realtime: dialing: %w", err)
	}
	if token != "" {
		q := u.Query()
		q.Set("token", token)
		u.RawQuery = q.Encode()
	}
	conn, br, _, err := ws.Dialer{}.Dial(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("realtime: dialing %s: %w", rawURL, err)
	}
	c := &Client{conn: conn, r: conn, pending: map[uint64]chan ServerFrame{}, notify: make(chan struct{}, 1), done: make(chan struct{})}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	go c.readLoop()
	return c, nil
}

func (c *Client) readLoop() {
	defer close(c.done)
	for {
		f, err := ws.ReadFrame(c.r)
		if err != nil {
			c.fail(&CloseError{Code: 1006, Reason: err.Error()})
			return
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			_ = c.write(ws.NewPongFrame(f.Payload))
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			_ = c.write(ws.NewCloseFrame(ws.NewCloseFrameBody(code, "")))
			c.fail(&CloseError{Code: int(code), Reason: reason})
			_ = c.conn.Close()
			return
		case ws.OpText:
			var sf ServerFrame
			if err := json.Unmarshal(f.Payload, &sf); err != nil {
				continue
			}
			c.mu.Lock()
			if sf.Type == TypeReply && sf.ID != 0 {
				if ch := c.pending[sf.ID]; ch != nil {
					delete(c.pending, sf.ID)
					ch <- sf
				}
			} else {
				c.queue = append(c.queue, sf)
			}
			c.mu.Unlock()
			c.signal()
		}
	}
}

func (c *Client) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.signal()
}

func (c *Client) write(f ws.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return ws.WriteFrame(c.conn, ws.MaskFrameInPlace(f))
}

// call sends f and waits for the reply.
func (c *Client) call(ctx context.Context, f ClientFrame) (ServerFrame, error) {
	f.ID = c.nextID.Add(1)
	b, err := json.Marshal(f)
	if err != nil {
		return ServerFrame{}, fmt.Errorf("realtime: encoding %s: %w", f.Op, err)
	}
	ch := make(chan ServerFrame, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return ServerFrame{}, err
	}
	c.pending[f.ID] = ch
	c.mu.Unlock()
	if err := c.write(ws.NewTextFrame(b)); err != nil {
		return ServerFrame{}, fmt.Errorf("realtime: sending %s: %w", f.Op, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return r, r.Error
		}
		return r, nil
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return ServerFrame{}, c.err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, f.ID)
		c.mu.Unlock()
		return ServerFrame{}, ctx.Err()
	}
}

// Subscribe subscribes to channel. With since, the hub first sends the
// messages after it; the reply's Recovered says whether all of them could
// be (if false, resync the state another way). A refused subscription
// returns a *ReplyError.
func (c *Client) Subscribe(ctx context.Context, channel string, since *Position) (ServerFrame, error) {
	return c.call(ctx, ClientFrame{Op: OpSubscribe, Channel: channel, Since: since})
}

// Unsubscribe ends the subscription to channel.
func (c *Client) Unsubscribe(ctx context.Context, channel string) error {
	_, err := c.call(ctx, ClientFrame{Op: OpUnsubscribe, Channel: channel})
	return err
}

// Publish publishes data (JSON) to channel, where the token allows it.
func (c *Client) Publish(ctx context.Context, channel string, data []byte) (Position, error) {
	r, err := c.call(ctx, ClientFrame{Op: OpPublish, Channel: channel, Data: data})
	return Position{Epoch: r.Epoch, Seq: r.Seq}, err
}

// Presence asks who is subscribed to channel.
func (c *Client) Presence(ctx context.Context, channel string) (PresenceInfo, error) {
	r, err := c.call(ctx, ClientFrame{Op: OpPresence, Channel: channel})
	if err != nil {
		return PresenceInfo{}, err
	}
	if r.Presence == nil {
		return PresenceInfo{}, errors.New("realtime: presence reply without presence")
	}
	return *r.Presence, nil
}

// Next returns the next message (Type TypeMessage) or resync notice (Type
// TypeResync). After the connection ends it returns a *CloseError.
func (c *Client) Next(ctx context.Context) (ServerFrame, error) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			f := c.queue[0]
			c.queue[0] = ServerFrame{}
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return f, nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return ServerFrame{}, err
		}
		select {
		case <-c.notify:
		case <-ctx.Done():
			return ServerFrame{}, ctx.Err()
		}
	}
}

// Close closes the connection with CloseNormal.
func (c *Client) Close() error {
	_ = c.write(ws.NewCloseFrame(ws.NewCloseFrameBody(CloseNormal, "")))
	err := c.conn.Close()
	<-c.done
	return err
}
