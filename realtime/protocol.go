package realtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Position is a place in a channel's stream: the channel's epoch (which
// changes when the broker lost the channel's sequence, as after a Redis
// restart without persistence) and the sequence number of a message in it.
type Position struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// Client operations (the "op" field of a client frame).
const (
	OpSubscribe   = "subscribe"
	OpUnsubscribe = "unsubscribe"
	OpPublish     = "publish"
	OpPresence    = "presence"
)

// Server frame types (the "type" field of a server frame).
const (
	TypeReply   = "reply"
	TypeMessage = "message"
	TypeResync  = "resync"
)

// Reply error codes (the "error.code" field of a reply).
const (
	CodeBadRequest  = "bad_request"
	CodeForbidden   = "forbidden"
	CodeUnavailable = "unavailable"
	CodeTooMany     = "too_many_subscriptions"
)

// MaxChannelLen is the longest channel name accepted, in bytes.
const MaxChannelLen = 200

// ErrBadFrame is wrapped by the errors of ParseClientFrame.
var ErrBadFrame = errors.New("bad frame")

// ClientFrame is one message from a client to the hub.
type ClientFrame struct {
	// ID is echoed in the reply; 0 asks for no reply.
	ID uint64 `json:"id,omitempty"`
	// Op is one of OpSubscribe, OpUnsubscribe, OpPublish, OpPresence.
	Op string `json:"op"`
	// Channel is the channel the operation is about.
	Channel string `json:"channel"`
	// Since, on subscribe, asks to recover the messages after this position.
	Since *Position `json:"since,omitempty"`
	// Data is the JSON payload to publish.
	Data json.RawMessage `json:"data,omitempty"`
}

// ParseClientFrame decodes and validates one client frame. Its errors wrap
// ErrBadFrame and name the problem.
func ParseClientFrame(b []byte) (ClientFrame, error) {
	var f ClientFrame
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return ClientFrame{}, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if d.More() {
		return ClientFrame{}, fmt.Errorf("%w: trailing data after the JSON object", ErrBadFrame)
	}
	switch f.Op {
	case OpSubscribe, OpUnsubscribe, OpPresence:
		if len(f.Data) != 0 {
			return ClientFrame{}, fmt.Errorf("%w: %q takes no data", ErrBadFrame, f.Op)
		}
	case OpPublish:
		if len(f.Data) == 0 {
			return ClientFrame{}, fmt.Errorf("%w: publish needs data", ErrBadFrame)
		}
		if f.Since != nil {
			return ClientFrame{}, fmt.Errorf("%w: publish takes no since", ErrBadFrame)
		}
	case "":
		return ClientFrame{}, fmt.Errorf("%w: missing op", ErrBadFrame)
	default:
		return ClientFrame{}, fmt.Errorf("%w: unknown op %q", ErrBadFrame, f.Op)
	}
	if f.Op != OpSubscribe && f.Since != nil {
		return ClientFrame{}, fmt.Errorf("%w: %q takes no since", ErrBadFrame, f.Op)
	}
	if err := ValidateChannel(f.Channel); err != nil {
		return ClientFrame{}, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	return f, nil
}

// ValidateChannel reports why name cannot be a channel name, or nil. A
// channel name is 1 to MaxChannelLen bytes of UTF-8 without spaces or
// control characters, and does not start with "$" (reserved).
func ValidateChannel(name string) error {
	if name == "" {
		return errors.New("empty channel name")
	}
	if len(name) > MaxChannelLen {
		return fmt.Errorf("channel name longer than %d bytes", MaxChannelLen)
	}
	if name[0] == '$' {
		return fmt.Errorf("channel name %q starts with reserved \"$\"", name)
	}
	if !utf8.ValidString(name) {
		return errors.New("channel name is not valid UTF-8")
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("channel name %q contains a space or control character", name)
		}
	}
	return nil
}

// ServerFrame is one message from the hub to a client, decoded. The hub
// encodes frames by hand; Client decodes them into this type.
type ServerFrame struct {
	// Type is TypeReply, TypeMessage or TypeResync.
	Type string `json:"type"`
	// ID is the id of the client frame this replies to.
	ID uint64 `json:"id,omitempty"`
	// Error is set on a reply to a refused operation.
	Error *ReplyError `json:"error,omitempty"`
	// Channel is the message's channel, the subscription of a reply, or the
	// channel to resync. Empty on a message sent to a user.
	Channel string `json:"channel,omitempty"`
	// User is set on a message sent to the connection's user rather than
	// to a channel.
	User string `json:"user,omitempty"`
	// Epoch and Seq place a channel message in its channel's stream; on a
	// subscribe reply they are the channel's current position.
	Epoch string `json:"epoch,omitempty"`
	Seq   uint64 `json:"seq,omitempty"`
	// Recovered, on a reply to a subscribe with since, reports whether every
	// missed message follows. When false the client must resync its state.
	Recovered *bool `json:"recovered,omitempty"`
	// Reason says why a resync is needed.
	Reason string `json:"reason,omitempty"`
	// Presence is the reply to a presence request.
	Presence *PresenceInfo `json:"presence,omitempty"`
	// Data is the message payload.
	Data json.RawMessage `json:"data,omitempty"`
}

// ReplyError is why an operation was refused.
type ReplyError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error implements error.
func (e *ReplyError) Error() string { return e.Code + ": " + e.Message }

// appendChannelMessage appends the JSON server frame of a channel message.
func appendChannelMessage(b []byte, channel string, pos Position, data []byte) []byte {
	b = append(b, `{"type":"message","channel":`...)
	b = appendJSONString(b, channel)
	if pos.Seq != 0 {
		b = append(b, `,"epoch":`...)
		b = appendJSONString(b, pos.Epoch)
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, pos.Seq, 10)
	}
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendUserMessage appends the JSON server frame of a message to a user.
func appendUserMessage(b []byte, user string, data []byte) []byte {
	b = append(b, `{"type":"message","user":`...)
	b = appendJSONString(b, user)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendResync appends the JSON server frame telling a client that it
// missed messages on channel that cannot be recovered.
func appendResync(b []byte, channel, reason string) []byte {
	b = append(b, `{"type":"resync","channel":`...)
	b = appendJSONString(b, channel)
	b = append(b, `,"reason":`...)
	b = appendJSONString(b, reason)
	return append(b, '}')
}

// marshalReply encodes a reply frame.
func marshalReply(f ServerFrame) []byte {
	f.Type = TypeReply
	b, err := json.Marshal(f)
	if err != nil {
		// Only Data can fail to marshal, and replies carry none.
		b, _ = json.Marshal(ServerFrame{Type: TypeReply, ID: f.ID, Error: &ReplyError{Code: CodeUnavailable, Message: err.Error()}})
	}
	return b
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
