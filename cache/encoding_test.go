package cache

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		value []byte
		tags  []string
	}{
		{"empty", []byte{}, nil},
		{"value only", []byte("hello"), nil},
		{"tags", []byte("v"), []string{"a", "bb", ""}},
		{"binary", []byte{0, 1, 0xff, recordVersion}, []string{"\x00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, tags, err := decodeRecord(encodeRecord(tt.value, tt.tags))
			if err != nil || !bytes.Equal(v, tt.value) || !slices.Equal(tags, tt.tags) {
				t.Fatalf("round trip = %q %q %v", v, tags, err)
			}
		})
	}
}

func TestDecodeRejectsCorruptData(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		b    []byte
		msg  bool
	}{
		{"empty record", nil, false},
		{"unknown version", []byte{9, 0}, false},
		{"truncated tag count", []byte{recordVersion, 0x80}, false},
		{"tag count beyond data", []byte{recordVersion, 5, 1, 'a'}, false},
		{"tag length beyond data", []byte{recordVersion, 1, 10, 'a'}, false},
		{"empty message", nil, true},
		{"unknown kind", []byte{'x', 0, 0}, true},
		{"node beyond data", []byte{msgKeys, 9, 'a'}, true},
		{"trailing bytes", append(encodeMessage(message{kind: msgKeys, node: "n"}), 'x'), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.msg {
				_, err = decodeMessage(tt.b)
			} else {
				_, _, err = decodeRecord(tt.b)
			}
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("err = %v, want errCorrupt", err)
			}
		})
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord([]byte("value"), []string{"t1", "t2"}))
	f.Add(encodeRecord(nil, nil))
	f.Add([]byte{recordVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, tags, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v is not errCorrupt", err)
			}
			return
		}
		// What decodes survives a round trip. (Not byte-equal: varints
		// may be overlong.)
		v2, tags2, err := decodeRecord(encodeRecord(v, tags))
		if err != nil || !bytes.Equal(v2, v) || !slices.Equal(tags2, tags) {
			t.Fatalf("round trip of %q: %q %q %v", b, v2, tags2, err)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(message{kind: msgKeys, node: "abc", names: []string{"k1", "k2"}}))
	f.Add(encodeMessage(message{kind: msgTags, node: "n", names: []string{"t"}}))
	f.Add(encodeMessage(message{kind: msgFlush, node: "n"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v is not errCorrupt", err)
			}
			return
		}
		m2, err := decodeMessage(encodeMessage(m))
		if err != nil || m2.kind != m.kind || m2.node != m.node || !slices.Equal(m2.names, m.names) {
			t.Fatalf("round trip of %q: %+v %v", b, m2, err)
		}
	})
}
