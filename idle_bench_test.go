package tern

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// BenchmarkIdleConnection measures what an idle connected client costs this process: heap
// in use and goroutines per client, with b.N clients connected to one Mosquitto at once.
// Run it with a fixed count, e.g. -bench IdleConnection -benchtime 2000x (each client is a
// file descriptor here and in the broker: ulimit -n must exceed b.N plus a few dozen).
// Target (PRODUCT.md): at most 32 KiB heap and 3 goroutines per idle connection.
func BenchmarkIdleConnection(b *testing.B) {
	m := brokertest.StartMosquitto(b, brokertest.Config{Extra: []string{"set_tcp_nodelay true"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := idleSample()
	clients := make([]*Client, 0, b.N)
	defer func() {
		for _, c := range clients {
			c.Disconnect(context.Background())
		}
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := New(WithBroker(m.URL), WithClientID(fmt.Sprintf("idle-%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Connect(ctx); err != nil {
			b.Fatalf("client %d: %v", i, err)
		}
		clients = append(clients, c)
	}
	b.StopTimer()
	// Idle means idle: the writers give their buffers back after idleRelease.
	time.Sleep(idleRelease + time.Second)
	after := idleSample()
	n := float64(b.N)
	b.ReportMetric(float64(after.heap-min(before.heap, after.heap))/n, "heap-B/conn")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/conn")
	b.ReportMetric(0, "ns/op") // connect time is not what this measures
}

type idleStats struct {
	heap       uint64
	goroutines int
}

func idleSample() idleStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return idleStats{heap: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
}
