// Package queuebench measures enqueueing into the durable publish queues side by side:
// tern's filequeue under each sync policy and autopaho's file queue, with one producer and
// with 64. Run: go test -run '^$' -bench . -benchtime 2000x ./queuebench
package queuebench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/autopaho/queue/file"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
)

var payload = bytes.Repeat([]byte{'x'}, 64)

// run spreads b.N enqueues over producers goroutines and reports msgs/s.
func run(b *testing.B, producers int, enqueue func() error) {
	b.ReportAllocs()
	var wg sync.WaitGroup
	per := b.N / producers
	extra := b.N % producers
	errc := make(chan error, producers)
	b.ResetTimer()
	for p := range producers {
		n := per
		if p < extra {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if err := enqueue(); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errc)
	for err := range errc {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkEnqueue(b *testing.B) {
	policies := []struct {
		name string
		p    filequeue.SyncPolicy
	}{
		{"every-write", filequeue.SyncEveryWrite},
		{"interval-10ms", filequeue.SyncInterval(10e6)},
		{"none", filequeue.SyncNone},
	}
	for _, producers := range []int{1, 64} {
		for _, pol := range policies {
			b.Run(fmt.Sprintf("lib=tern-filequeue/sync=%s/producers=%d", pol.name, producers), func(b *testing.B) {
				q, err := filequeue.Open(b.TempDir(), filequeue.WithSync(pol.p))
				if err != nil {
					b.Fatal(err)
				}
				defer q.Close()
				ctx := context.Background()
				run(b, producers, func() error {
					return q.Enqueue(ctx, &tern.QueueEntry{Message: tern.PublishOptions{Topic: "bench/q", QoS: 1, Payload: payload}})
				})
			})
		}
		b.Run(fmt.Sprintf("lib=autopaho-file/producers=%d", producers), func(b *testing.B) {
			q, err := file.New(b.TempDir(), "q", ".msg")
			if err != nil {
				b.Fatal(err)
			}
			run(b, producers, func() error { return q.Enqueue(bytes.NewReader(payload)) })
		})
	}
}

// BenchmarkPublishAsync is the single-producer case through the public API: one goroutine
// calls QueuePublisher.PublishAsync on a filequeue that syncs every write and waits for
// every token, so the figure is messages stored durably per second. The client is never
// connected: only storing is measured (the drain waits for a connection meanwhile). The
// row "Publish" is the same loop calling the synchronous Publish, one fsync per message.
func BenchmarkPublishAsync(b *testing.B) {
	for _, mode := range []string{"PublishAsync", "Publish"} {
		b.Run(fmt.Sprintf("lib=tern-queuepub/sync=every-write/producers=1/%s", mode), func(b *testing.B) {
			c, err := tern.New(tern.WithBroker("mqtt://127.0.0.1:1"))
			if err != nil {
				b.Fatal(err)
			}
			q, err := filequeue.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			p, err := tern.NewQueuePublisher(c, q)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			m := tern.PublishOptions{Topic: "bench/q", QoS: 1, Payload: payload}
			b.ReportAllocs()
			b.ResetTimer()
			toks := make([]*tern.QueueToken, 0, b.N)
			for range b.N {
				if mode == "Publish" {
					if err := p.Publish(ctx, m); err != nil {
						b.Fatal(err)
					}
					continue
				}
				tok, err := p.PublishAsync(ctx, m)
				if err != nil {
					b.Fatal(err)
				}
				toks = append(toks, tok)
			}
			for _, tok := range toks {
				if err := tok.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			if st := q.Stats(); st.Depth != b.N {
				b.Fatalf("depth %d after %d stored", st.Depth, b.N)
			}
			p.Close(ctx)
			q.Close()
			c.Disconnect(ctx) // never connected: nothing to say
		})
	}
}
