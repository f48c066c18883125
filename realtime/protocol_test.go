package realtime

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseClientFrame(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{`{"id":1,"op":"subscribe","channel":"a"}`, ""},
		{`{"op":"subscribe","channel":"a","since":{"epoch":"e","seq":3}}`, ""},
		{`{"op":"publish","channel":"a","data":{"x":[1,2]}}`, ""},
		{`{"op":"unsubscribe","channel":"a"}`, ""},
		{`{"op":"presence","channel":"a"}`, ""},
		{``, "EOF"},
		{`[]`, "cannot unmarshal array"},
		{`{"op":"subscribe","channel":"a"} {}`, "trailing data"},
		{`{"channel":"a"}`, "missing op"},
		{`{"op":"x","channel":"a"}`, `unknown op "x"`},
		{`{"op":"publish","channel":"a"}`, "publish needs data"},
		{`{"op":"subscribe","channel":"a","data":1}`, "takes no data"},
		{`{"op":"publish","channel":"a","data":1,"since":{"seq":1}}`, "takes no since"},
		{`{"op":"unsubscribe","channel":"a","since":{"seq":1}}`, "takes no since"},
		{`{"op":"subscribe","channel":""}`, "empty channel name"},
		{`{"op":"subscribe","channel":"a b"}`, "space or control"},
		{`{"op":"subscribe","channel":"$u:x"}`, "reserved"},
		{`{"op":"subscribe","channel":"` + strings.Repeat("a", MaxChannelLen+1) + `"}`, "longer than"},
		{`{"op":"subscribe","channel":"a","extra":1}`, "unknown field"},
		{`{"op":"publish","channel":"a","data":{]}`, "invalid character"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseClientFrame([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrBadFrame) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want ErrBadFrame containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestServerFramesAreJSON(t *testing.T) {
	for _, user := range []string{"alice", "a\"b\\c", "\x00\x1f\x7f", "é"} {
		var f ServerFrame
		b := appendUserMessage(nil, user, []byte(`{"k":1}`))
		if err := json.Unmarshal(b, &f); err != nil || f.User != user {
			t.Fatalf("%q: %s: %v (%+v)", user, b, err, f)
		}
		b = appendResync(nil, "ch", user)
		if err := json.Unmarshal(b, &f); err != nil || f.Reason != user {
			t.Fatalf("%q: %s: %v", user, b, err)
		}
	}
}

// FuzzParseClientFrame checks that the parser never panics and that what it
// accepts is a valid operation on a valid channel that survives a round trip.
func FuzzParseClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"id":1,"op":"subscribe","channel":"a"}`,
		`{"op":"subscribe","channel":"news","since":{"epoch":"e1","seq":42}}`,
		`{"id":2,"op":"publish","channel":"chat:1","data":{"text":"hi"}}`,
		`{"op":"unsubscribe","channel":"a"}`,
		`{"op":"presence","channel":"a"}`,
		`{"op":"publish","channel":"a","data":"\u0000"}`,
		`{"op":"subscribe","channel":"\u00e9"}`,
		`{}`, `null`, `[`, `{"op":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseClientFrame(b)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error does not wrap ErrBadFrame: %v", err)
			}
			return
		}
		if err := ValidateChannel(fr.Channel); err != nil {
			t.Fatalf("accepted invalid channel: %v", err)
		}
		if fr.Op == OpPublish && !json.Valid(fr.Data) {
			t.Fatalf("accepted invalid data %q", fr.Data)
		}
		again, err := json.Marshal(fr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseClientFrame(again); err != nil {
			t.Fatalf("re-encoded frame %s refused: %v", again, err)
		}
	})
}
