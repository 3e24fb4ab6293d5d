package tern

import (
	"bufio"
	"context"
	"net"
	"runtime"
	"testing"

	"github.com/ternmq/tern/packet"
)

// BenchmarkPublishQoS1Conc64 measures 64 goroutines each calling the synchronous QoS 1
// Publish on one client, against an in-process peer that answers every PUBLISH with PUBACK
// in batches. Run with -mutexprofile to see the contention on Client.mu.
func BenchmarkPublishQoS1Conc64(b *testing.B) {
	s := startBenchServer(b, func(nc net.Conn, r *packet.Reader) {
		w := bufio.NewWriterSize(nc, 64<<10)
		var pub packet.Publish
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			if f.Type() == packet.PUBLISH && pub.Decode(f.Flags(), f.Body) == nil && pub.QoS == 1 {
				a := packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID}
				var buf [4]byte
				w.Write(a.AppendTo(buf[:0]))
			}
			f.Release()
			if r.Buffered() == 0 {
				w.Flush()
			}
		}
	})
	c := benchClient(b, s.ln.Addr().String())
	m := PublishOptions{Topic: "bench/qos1", Payload: make([]byte, 64), QoS: 1}
	b.ReportAllocs()
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := c.Publish(ctx, m); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
