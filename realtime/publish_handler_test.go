package realtime

import (
	"strings"
	"testing"
)

func TestPublishHandler(t *testing.T) {
	n := startNode(t, Config{})
	c := dial(t, n.url, token(t, "alice", false, "news"))
	subscribe(t, c, "news", nil)
	tests := []struct {
		name string
		body string
		code int
		want string
	}{
		{"channel", `{"channel":"news","data":{"t":1}}`, 200, `"seq":1`},
		{"user", `{"user":"alice","data":2}`, 200, `"seq":0`},
		{"both", `{"channel":"news","user":"alice","data":1}`, 400, "exactly one of channel and user"},
		{"neither", `{"data":1}`, 400, "exactly one of channel and user"},
		{"no data", `{"channel":"news"}`, 400, "data is required"},
		{"bad data", `{"channel":"news","data":{x}}`, 400, "invalid character"},
		{"bad channel", `{"channel":"$u:alice","data":1}`, 400, "reserved"},
		{"unknown field", `{"channel":"news","data":1,"ttl":3}`, 400, "unknown field"},
		{"not JSON", `hello`, 400, "body:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := postPublish(t, n.admin, tt.body)
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Fatalf("got %d %s, want %d containing %s", code, body, tt.code, tt.want)
			}
		})
	}
	if f := next(t, c); string(f.Data) != `{"t":1}` || f.Channel != "news" {
		t.Fatalf("channel message %+v", f)
	}
	if f := next(t, c); string(f.Data) != `2` || f.User != "alice" {
		t.Fatalf("user message %+v", f)
	}
}
