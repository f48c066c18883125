package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The Redis layer stores a value as a record:
//
//	byte    recordVersion
//	uvarint number of tags
//	        each tag: uvarint length, bytes
//	rest    the value
//
// An invalidation message on the channel is:
//
//	byte    kind ('k' keys, 't' tags, 'f' flush everything)
//	uvarint length of the sender's node id, the id
//	uvarint number of names, each: uvarint length, bytes

const recordVersion = 1

const (
	msgKeys  = 'k'
	msgTags  = 't'
	msgFlush = 'f'
)

// maxNames bounds the names a record or message may declare, so that a
// corrupt length cannot make the decoder allocate much.
const maxNames = 1 << 16

// errCorrupt marks a record or message read from Redis that cannot be
// decoded; it is counted as a Redis error, never returned to callers.
var errCorrupt = errors.New("cache: corrupt data from redis")

func appendNames(b []byte, names []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, s := range names {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// readNames decodes what appendNames wrote and returns the rest of b.
func readNames(b []byte) ([]string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, nil, fmt.Errorf("%w: bad name count", errCorrupt)
	}
	b = b[k:]
	if n > maxNames || n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: name count %d exceeds the data", errCorrupt, n)
	}
	var names []string
	if n > 0 {
		names = make([]string, 0, n)
	}
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, nil, fmt.Errorf("%w: bad name length", errCorrupt)
		}
		b = b[k:]
		if l > uint64(len(b)) {
			return nil, nil, fmt.Errorf("%w: name length %d exceeds the data", errCorrupt, l)
		}
		names = append(names, string(b[:l]))
		b = b[l:]
	}
	return names, b, nil
}

func encodeRecord(value []byte, tags []string) []byte {
	n := 2 + len(value)
	for _, t := range tags {
		n += len(t) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, recordVersion)
	b = appendNames(b, tags)
	return append(b, value...)
}

// decodeRecord returns the value and tags of a record. The value aliases b.
func decodeRecord(b []byte) (value []byte, tags []string, err error) {
	if len(b) == 0 || b[0] != recordVersion {
		return nil, nil, fmt.Errorf("%w: unknown record version", errCorrupt)
	}
	tags, rest, err := readNames(b[1:])
	if err != nil {
		return nil, nil, err
	}
	return rest, tags, nil
}

type message struct {
	kind  byte
	node  string
	names []string
}

func encodeMessage(m message) []byte {
	b := make([]byte, 0, 16+len(m.node)+16*len(m.names))
	b = append(b, m.kind)
	b = binary.AppendUvarint(b, uint64(len(m.node)))
	b = append(b, m.node...)
	return appendNames(b, m.names)
}

func decodeMessage(b []byte) (message, error) {
	if len(b) == 0 {
		return message{}, fmt.Errorf("%w: empty message", errCorrupt)
	}
	m := message{kind: b[0]}
	switch m.kind {
	case msgKeys, msgTags, msgFlush:
	default:
		return message{}, fmt.Errorf("%w: unknown message kind %q", errCorrupt, m.kind)
	}
	b = b[1:]
	l, k := binary.Uvarint(b)
	if k <= 0 || l > uint64(len(b)-k) {
		return message{}, fmt.Errorf("%w: bad node id", errCorrupt)
	}
	m.node = string(b[k : k+int(l)])
	names, rest, err := readNames(b[k+int(l):])
	if err != nil {
		return message{}, err
	}
	if len(rest) != 0 {
		return message{}, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(rest))
	}
	m.names = names
	return m, nil
}
