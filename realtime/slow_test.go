package realtime

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// A client that stops reading is cut off with CloseSlowClient once its
// send queue fills, while 1,000 other clients keep receiving everything.
func TestSlowClientCutOffOthersKeepReceiving(t *testing.T) {
	n := startNode(t, Config{SendQueue: 8, WriteTimeout: 20 * time.Second})
	others := 1000
	if testing.Short() {
		others = 10
	}
	const broadcasts = 5
	start := time.Now()
	clients := make([]*Client, others)
	var wg sync.WaitGroup
	errs := make(chan error, others)
	for i := range clients {
		clients[i] = dial(t, n.url, token(t, fmt.Sprint("user", i), false, "b"))
	}
	for _, c := range clients {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := c.Subscribe(ctx, "b", nil); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	t.Logf("%v: %d clients subscribed", time.Since(start), others)
	slow := dialRaw(t, n.url, token(t, "slow", false, "b"))
	// A modest receive buffer (not below the loopback MSS, where the window
	// would stall) so the flood fills it quickly.
	if tc, ok := slow.Conn.(interface{ SetReadBuffer(int) error }); ok {
		_ = tc.SetReadBuffer(128 << 10)
	}
	if _, err := slow.Write(maskedText(`{"op":"subscribe","channel":"b"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return n.hub.Status().Subscriptions == others+1 })

	// Everyone gets the broadcasts, received concurrently while the slow
	// client is flooded with large messages to its user.
	for _, c := range clients {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for i := 1; i <= broadcasts; i++ {
				f, err := c.Next(ctx)
				if err != nil {
					errs <- fmt.Errorf("broadcast %d: %w", i, err)
					return
				}
				if f.Seq != uint64(i) {
					errs <- fmt.Errorf("broadcast %d: got seq %d", i, f.Seq)
					return
				}
			}
		})
	}
	big := []byte(`"` + strings.Repeat("x", 256<<10) + `"`)
	ctx := context.Background()
	sent := 0
	for i := 0; i < 2000 && n.hub.Status().SlowClients == 0; i++ {
		if err := n.hub.PublishUser(ctx, "slow", big); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 && sent < broadcasts {
			sent++
			publish(t, n.hub, "b", fmt.Sprint(sent))
		}
	}
	if n.hub.Status().SlowClients != 1 {
		t.Fatal("slow client was never cut off")
	}
	for sent < broadcasts {
		sent++
		publish(t, n.hub, "b", fmt.Sprint(sent))
	}
	t.Logf("%v: flood done", time.Since(start))
	t.Logf("status after flood: %+v", n.hub.Status())
	code, reason, _ := slow.readUntilClose(t)
	if code != CloseSlowClient || !strings.Contains(reason, "slow client") {
		t.Fatalf("slow client closed with %d %q, want %d", code, reason, CloseSlowClient)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return n.hub.Status().Connections == others })
	t.Logf("%v: all received", time.Since(start))
}
