package realtime

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	now := time.Now()
	good, err := SignToken(testSecret, Claims{User: "alice", Channels: []string{"a", "b:*"}, Publish: true, Expires: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := SignToken(testSecret, Claims{User: "alice", Expires: now.Add(-time.Second)})
	other, _ := SignToken([]byte("other"), Claims{User: "alice", Expires: now.Add(time.Minute)})
	body, sig, _ := strings.Cut(good, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(body)
	altered := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(raw), "alice", "admin", 1))) + "." + sig

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"valid", good, nil},
		{"expired", expired, ErrTokenExpired},
		{"other secret", other, ErrTokenSignature},
		{"altered body", altered, ErrTokenSignature},
		{"empty", "", ErrTokenMalformed},
		{"no dot", "abc", ErrTokenMalformed},
		{"bad base64 signature", body + ".!!!", ErrTokenMalformed},
		{"empty signature", body + ".", ErrTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseToken(testSecret, tt.token, now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == nil && (c.User != "alice" || !c.Publish || !c.allows("a") || !c.allows("b:x") || c.allows("c")) {
				t.Fatalf("claims %+v", c)
			}
		})
	}
	t.Run("sign refuses incomplete claims", func(t *testing.T) {
		for _, c := range []Claims{{Expires: now}, {User: "u"}} {
			if _, err := SignToken(testSecret, c); err == nil {
				t.Errorf("SignToken(%+v) succeeded", c)
			}
		}
		if _, err := SignToken(nil, Claims{User: "u", Expires: now}); err == nil {
			t.Error("SignToken with empty secret succeeded")
		}
	})
}
