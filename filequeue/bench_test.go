package filequeue

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
)

// BenchmarkEnqueue measures Enqueue of a 64-byte message for each sync policy, from one
// producer and from 64 at once (group commit), on the real file system.
func BenchmarkEnqueue(b *testing.B) {
	policies := []SyncPolicy{SyncEveryWrite, SyncInterval(10 * time.Millisecond), SyncNone}
	for _, p := range policies {
		for _, producers := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/producers=%d", p, producers), func(b *testing.B) {
				q := mustOpen(b, b.TempDir(), WithSync(p))
				defer q.Close()
				payload := make([]byte, 64)
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				var next atomic.Int64
				var wg sync.WaitGroup
				for range producers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						e := tern.QueueEntry{}
						for next.Add(1) <= int64(b.N) {
							e.Message = tern.PublishOptions{Topic: "bench/topic", Payload: payload, QoS: 1}
							if err := q.Enqueue(ctx, &e); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			})
		}
	}
}
