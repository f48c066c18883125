package realtime

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

func BenchmarkParseClientFrame(b *testing.B) {
	msg := []byte(`{"id":7,"op":"subscribe","channel":"chat:42","since":{"epoch":"3f9a1c2b7d10","seq":41}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseClientFrame(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChannelFrame(b *testing.B) {
	data := []byte(`{"title":"hello","body":"a message of about one hundred bytes, as a notification would be"}`)
	b.ReportAllocs()
	for b.Loop() {
		_ = textFrame(appendChannelMessage(make([]byte, 0, 192), "news", Position{Epoch: "3f9a1c2b7d10", Seq: 42}, data))
	}
}

// BenchmarkBroadcast publishes on a channel with 100 subscribed client
// connections on one node and waits until every one has the message.
func BenchmarkBroadcast(b *testing.B) {
	n := startNode(b, Config{})
	const subs = 100
	clients := make([]*Client, subs)
	for i := range clients {
		clients[i] = dial(b, n.url, token(b, fmt.Sprint("u", i), false, "bench"))
		subscribe(b, clients[i], "bench", nil)
	}
	ctx := context.Background()
	data := []byte(`{"n":1}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := n.hub.Publish(ctx, "bench", data); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Go(func() {
				if _, err := c.Next(ctx); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
	b.ReportMetric(float64(b.N*subs)/b.Elapsed().Seconds(), "deliveries/s")
}
