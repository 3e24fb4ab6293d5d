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
