package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scaleout/scaleout/realtime"
)

// TestRealtimeAcrossGateways: a user connected through gateway B gets a
// message published on gateway A's admin API; the rest of the route is
// proxied as usual.
func TestRealtimeAcrossGateways(t *testing.T) {
	for _, broker := range []string{"redis", "nats"} {
		t.Run(broker, func(t *testing.T) {
			app := newTestBackend(t, "app")
			secret := "s3cret-" + broker
			mk := func() (string, string) {
				cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: {listen: "127.0.0.1:0"}
realtime:
  broker: %s
  redis_url: redis://127.0.0.1:6379/0
  secret: %s
upstreams:
  app: {backends: [{url: %s}]}
routes:
  - {path_prefix: /, upstream: app, realtime: {path: /ws}}
`, broker, secret, app.URL)
				_, base, admin := runGateway(t, parse(t, cfg))
				return base, admin
			}
			_, adminA := mk()
			baseB, _ := mk()
			if code, body, _ := get(t, baseB+"/page"); code != 200 || body != "app" {
				t.Fatalf("non-WebSocket path of the realtime route: %d %q", code, body)
			}
			channel := fmt.Sprintf("news-%d", time.Now().UnixNano())
			tok, err := realtime.SignToken([]byte(secret), realtime.Claims{User: "alice", Channels: []string{"news-*"}, Expires: time.Now().Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := realtime.Dial(ctx, "ws"+strings.TrimPrefix(baseB, "http")+"/ws", tok)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Subscribe(ctx, channel, nil); err != nil {
				t.Fatal(err)
			}
			publish := func(body string) int {
				req, _ := http.NewRequest("POST", adminA+"/api/publish", strings.NewReader(body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			// The subscription reaches node A's broker asynchronously; publish
			// until the first message arrives, then check one more exactly.
			deadline := time.Now().Add(5 * time.Second)
			var got realtime.ServerFrame
			for {
				if code := publish(fmt.Sprintf(`{"channel": %q, "data": {"n": 1}}`, channel)); code != 200 {
					t.Fatalf("publish: %d", code)
				}
				fctx, fcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				got, err = c.Next(fctx)
				fcancel()
				if err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil || got.Channel != channel {
				t.Fatalf("no message from node A on node B: %v %+v", err, got)
			}
			if code := publish(`{"user": "alice", "data": {"hello": "alice"}}`); code != 200 {
				t.Fatalf("publish to user: %d", code)
			}
			for {
				f, err := c.Next(ctx)
				if err != nil {
					t.Fatalf("user message not delivered: %v", err)
				}
				if strings.Contains(string(f.Data), "alice") {
					break
				}
			}
			// A forged token is refused.
			bad, err := realtime.Dial(ctx, "ws"+strings.TrimPrefix(baseB, "http")+"/ws", tok+"x")
			if err == nil {
				_, err = bad.Subscribe(ctx, channel, nil)
				bad.Close()
			}
			if err == nil {
				t.Error("a forged token could subscribe")
			}
		})
	}
}
