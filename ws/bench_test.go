package ws_test

import (
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/ws"
)

// The cost of the WebSocket transport beside TCP, on the same mochi broker: run with
//
//	go test -run '^$' -bench . -benchmem
//
// and compare the tcp and ws rows. Publish is QoS 1, pipelined over the broker's window;
// round trip is one QoS 0 message published and received back before the next. The broker
// runs in the same process, so time and allocations include its share.
func BenchmarkTransport(b *testing.B) {
	wsAddr, tcpAddr := mochiBoth(b, nil)
	for _, tr := range []struct {
		name string
		url  string
		opts []tern.Option
	}{
		{"tcp", "mqtt://" + tcpAddr, nil},
		{"ws", "ws://" + wsAddr + "/mqtt", []tern.Option{tern.WithTransport(ws.New())}},
	} {
		b.Run(tr.name+"/publish-qos1", func(b *testing.B) {
			c := client(b, tr.url, tr.opts...)
			ctx := testCtx(b)
			payload := make([]byte, 64)
			toks := make([]*tern.PublishToken, 0, 1024)
			wait := func() {
				for _, tok := range toks {
					select {
					case <-tok.Done():
					case <-ctx.Done():
						b.Fatal("publish not acknowledged in time")
					}
					if err := tok.Err(); err != nil {
						b.Fatal(err)
					}
				}
				toks = toks[:0]
			}
			b.ReportAllocs()
			for b.Loop() {
				tok, err := c.PublishAsync(ctx, tern.PublishOptions{Topic: "bench/pub", QoS: 1, Payload: payload})
				if err != nil {
					b.Fatal(err)
				}
				if toks = append(toks, tok); len(toks) == cap(toks) {
					wait()
				}
			}
			wait()
		})
		b.Run(tr.name+"/round-trip-qos0", func(b *testing.B) {
			c := client(b, tr.url, tr.opts...)
			ctx := testCtx(b)
			q, _, err := c.SubscribeQueue(ctx, []tern.TopicFilter{{Topic: "bench/rt"}}, tern.SubAutoAck())
			if err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Publish(ctx, tern.PublishOptions{Topic: "bench/rt", Payload: payload}); err != nil {
					b.Fatal(err)
				}
				if _, ok := q.Pop(ctx); !ok {
					b.Fatal("no message back in time")
				}
			}
		})
	}
}
