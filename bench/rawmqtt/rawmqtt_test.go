package rawmqtt

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

// TestPublishSubscribe sends messages from one raw client to another through Mosquitto at
// every QoS and checks that each arrives once, in order, with its own payload.
func TestPublishSubscribe(t *testing.T) {
	t.Parallel()
	m := brokertest.StartMosquitto(t, brokertest.Config{})
	for _, qos := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			topic := fmt.Sprintf("raw/%d", qos)
			const n = 3000
			sub, err := Dial(ctx, m.Addr, Options{ClientID: topic + "/sub", ReceiveMax: 20})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			var mu sync.Mutex
			next := uint64(0)
			done := make(chan struct{})
			sub.OnMessage(func(p *packet.Publish) {
				mu.Lock()
				defer mu.Unlock()
				if got := binary.BigEndian.Uint64(p.Payload); got != next {
					t.Errorf("message %d arrived as number %d", got, next)
				}
				next++
				if next == n {
					close(done)
				}
			})
			if err := sub.Subscribe(ctx, topic, 2); err != nil {
				t.Fatal(err)
			}
			pub, err := Dial(ctx, m.Addr, Options{ClientID: topic + "/pub"})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			if q := pub.SendQuota(); q != 20 {
				t.Errorf("send quota %d, want Mosquitto's 20", q)
			}
			tmpl := NewTemplate(topic, qos, make([]byte, 100))
			if err := pub.Publish(ctx, tmpl, n, func(i int, b []byte) { binary.BigEndian.PutUint64(b, uint64(i)) }); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-ctx.Done():
				mu.Lock()
				t.Fatalf("%d of %d received", next, n)
			}
			t.Logf("most unacknowledged at the subscriber: %d (advertised 20)", sub.MaxUnacked())
		})
	}
}

// TestPublishAllocatesNothing checks the raw client's promise: no allocation per message.
func TestPublishAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	m := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub, err := Dial(ctx, m.Addr, Options{ClientID: "allocs"})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	tmpl := NewTemplate("allocs", 1, make([]byte, 64))
	stamp := func(int, []byte) {}
	pub.Publish(ctx, tmpl, 100, stamp) // warm up
	allocs := testing.AllocsPerRun(5, func() {
		if err := pub.Publish(ctx, tmpl, 1000, stamp); err != nil {
			t.Fatal(err)
		}
	})
	if per := allocs / 1000; per > 0.01 {
		t.Fatalf("%.3f allocations per message", per)
	}
}

// TestAckEach checks the per-message sink mode: with AckEach every QoS 1 message gets its
// PUBACK in a write of its own, so n messages cost exactly n acknowledgement writes; the
// default batches them, never more than one write per message.
func TestAckEach(t *testing.T) {
	t.Parallel()
	m := brokertest.StartMosquitto(t, brokertest.Config{})
	for _, each := range []bool{false, true} {
		t.Run(fmt.Sprintf("each=%v", each), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			topic := fmt.Sprintf("ackeach/%v", each)
			const n = 2000
			sub, err := Dial(ctx, m.Addr, Options{ClientID: topic + "/sub", ReceiveMax: 20, AckEach: each})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			var got atomic.Int64
			done := make(chan struct{})
			sub.OnMessage(func(p *packet.Publish) {
				if p.QoS != 1 {
					t.Errorf("message at QoS %d, want 1", p.QoS)
				}
				if got.Add(1) == n {
					close(done)
				}
			})
			if err := sub.Subscribe(ctx, topic, 1); err != nil {
				t.Fatal(err)
			}
			pub, err := Dial(ctx, m.Addr, Options{ClientID: topic + "/pub"})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			if err := pub.Publish(ctx, NewTemplate(topic, 1, make([]byte, 64)), n, func(int, []byte) {}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatalf("%d of %d received", got.Load(), n)
			}
			// The read loop writes a message's acknowledgement after its handler returns; once
			// Close has returned the loop has ended, so every write it made is counted.
			sub.Close()
			w := sub.AckWrites()
			switch {
			case each && w != n:
				t.Errorf("AckEach: %d acknowledgement writes for %d messages, want one each", w, n)
			case !each && (w < 1 || w > n):
				t.Errorf("batched: %d acknowledgement writes for %d messages", w, n)
			}
			t.Logf("%d acknowledgement writes for %d messages", w, n)
		})
	}
}
