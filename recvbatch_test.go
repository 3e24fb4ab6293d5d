package tern

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ternmq/tern/packet"
)

// recvBurst encodes n PUBLISH packets on topic t at qos (ids from 1), back to back, so the
// peer can send them in one write: the client reads them as one batch.
func recvBurst(t string, qos byte, n int) []byte {
	var b []byte
	for i := range n {
		p := packet.Publish{Topic: t, QoS: qos, Payload: []byte{byte(i), byte(i >> 8)}}
		if qos > 0 {
			p.PacketID = uint16(i + 1)
		}
		b = p.AppendTo(b)
	}
	return b
}

// ackWakes returns how many acknowledgements woke the live connection's writer.
func ackWakes(c *Client) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.w.urgentWakes.Load()
}

// subscribeAtPeer makes a subscription before Connect (so it is routed at once), connects
// to the scripted peer and answers its SUBSCRIBE.
func subscribeAtPeer(t *testing.T, sub func(c *Client) error, opts ...Option) (*Client, *peerConn) {
	t.Helper()
	c, pc, _ := connectPeerWith(t, sub, opts...)
	sp, ok := pc.read().(*packet.Subscribe)
	if !ok {
		t.Fatal("peer: expected SUBSCRIBE")
	}
	pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1}})
	return c, pc
}

func connectPeerWith(t *testing.T, sub func(c *Client) error, opts ...Option) (*Client, *peerConn, *packet.Connect) {
	t.Helper()
	p := newPeer(t)
	c, err := New(append([]Option{WithBroker(p.url()), WithStats(),
		WithReconnectBackoff(ConstantBackoff(3600e9))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub(c); err != nil {
		t.Fatal(err)
	}
	pc, cp := startAtPeer(t, p, c, &packet.Connack{})
	return c, pc, cp
}

// burstAckWakes sends two bursts of n QoS 1 messages on topic t, reads their PUBACKs in
// arrival order and returns how many acknowledgements woke the writer during the second
// (the first moves the reader to its large buffer: an idle connection reads through a
// 512-byte one, which splits the first batch).
func burstAckWakes(t *testing.T, c *Client, pc *peerConn, topic string, n int) uint64 {
	t.Helper()
	pc.sendRaw(recvBurst(topic, 1, n))
	readAcksInOrder(t, pc, n)
	before := ackWakes(c)
	pc.sendRaw(recvBurst(topic, 1, n))
	readAcksInOrder(t, pc, n)
	return ackWakes(c) - before
}

// readAcksInOrder reads n PUBACKs and checks they come in arrival order ([MQTT-4.6.0-2]).
func readAcksInOrder(t *testing.T, pc *peerConn, n int) {
	t.Helper()
	for i := range n {
		a, ok := pc.read().(*packet.Ack)
		if !ok || a.Kind != packet.PUBACK || a.PacketID != uint16(i+1) {
			t.Fatalf("ack %d: got %+v, want PUBACK %d", i, a, i+1)
		}
	}
}

// TestReadBatchAcksOneWrite: the acknowledgements a read batch causes leave together, not
// one write each (ack coalescing). A burst of 1,000 QoS 1 messages that the read loop
// acknowledges itself (inline callback) costs a handful of writes, in arrival order
// (MQTT 5 §4.6, [MQTT-4.6.0-2]).
func TestReadBatchAcksOneWrite(t *testing.T) {
	const n = 1000
	var got atomic.Int32 // the read loop writes, the test reads: TCP is no sync to the race detector
	c, pc := subscribeAtPeer(t, func(c *Client) error {
		_, err := c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "b", QoS: 1}},
			func(m *Message) { got.Add(1) }, SubInline())
		return err
	})
	// The burst is one 8 KB write on loopback: one read batch, rarely a few. Inside a
	// batch the acknowledgements are corked; only the last packet's wakes the writer, so
	// the writer is woken once per batch, not once per message. (How many writes that
	// makes depends on how fast the writer runs beside the reader: not checked.)
	if w := burstAckWakes(t, c, pc, "b", n); w > 10 {
		t.Fatalf("%d acknowledgements woke the writer %d times; want about one per read batch", n, w)
	}
	if got := got.Load(); got != 2*n {
		t.Fatalf("callback saw %d messages, want %d", got, 2*n)
	}
}

// TestReadBatchOneWakeup: a consumer that keeps up is woken once per read batch, not once
// per message (batched delivery): a burst of 1,000 QoS 0 messages to a callback subscription
// parks its goroutine a handful of times, and every message arrives, in order.
func TestReadBatchOneWakeup(t *testing.T) {
	const n = 1000
	var seen []int
	done := make(chan struct{}, 2)
	var sub *Subscription
	_, pc := subscribeAtPeer(t, func(c *Client) error {
		var err error
		sub, err = c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "b"}},
			func(m *Message) {
				seen = append(seen, int(m.Payload[0])|int(m.Payload[1])<<8)
				if len(seen)%n == 0 {
					done <- struct{}{}
				}
			})
		return err
	})
	// A first burst wakes the reader's large buffer (an idle connection reads through a
	// 512-byte one, which splits the first batch); the second is measured.
	pc.sendRaw(recvBurst("b", 0, n))
	waitDone(t, done)
	before := sub.q.parks.Load()
	pc.sendRaw(recvBurst("b", 0, n))
	waitDone(t, done)
	for i, v := range seen {
		if v != i%n {
			t.Fatalf("message %d is %d: out of order", i, v)
		}
	}
	if p := sub.q.parks.Load() - before; p > 4 {
		t.Fatalf("the consumer parked %d times for one burst of %d; want about one wake-up per read batch", p, n)
	}
}

// TestReadBatchFullBlockBuffer: quiet offers never leave a consumer asleep in front of a
// full Block buffer: with a buffer of 2, a burst of QoS 0 messages makes the read loop wait
// for the consumer, which must be woken to make room (no message lost, none out of order).
func TestReadBatchFullBlockBuffer(t *testing.T) {
	const n = 100
	var seen []int
	done := make(chan struct{})
	_, pc := subscribeAtPeer(t, func(c *Client) error {
		_, err := c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "b"}},
			func(m *Message) {
				seen = append(seen, int(m.Payload[0]))
				if len(seen) == n {
					close(done)
				}
			}, SubBuffer(2))
		return err
	})
	pc.sendRaw(recvBurst("b", 0, n))
	waitDone(t, done)
	for i, v := range seen {
		if v != i {
			t.Fatalf("message %d is %d: out of order", i, v)
		}
	}
}

// TestSubInline: an inline callback runs on the read loop, in arrival order, and its
// messages are acknowledged when it returns; Unsubscribe returns only once no callback
// runs; the option is refused by the forms that buffer.
func TestSubInline(t *testing.T) {
	ctx := testCtx(t)
	var mu sync.Mutex
	var seen []int
	var sub *Subscription
	c, pc := subscribeAtPeer(t, func(c *Client) error {
		var err error
		sub, err = c.SubscribeCallback(ctx, []TopicFilter{{Topic: "b", QoS: 1}},
			func(m *Message) {
				mu.Lock()
				seen = append(seen, int(m.Payload[0]))
				mu.Unlock()
			}, SubInline(), SubZeroCopy())
		return err
	})
	if sub.q != nil || sub.cbDone != nil {
		t.Fatal("an inline subscription has a buffer or a goroutine")
	}
	pc.sendRaw(recvBurst("b", 1, 50))
	readAcksInOrder(t, pc, 50)
	mu.Lock()
	seen = slices.Clone(seen)
	mu.Unlock()
	for i, v := range seen { // read after the acks: each was sent after its callback returned
		if v != i {
			t.Fatalf("message %d is %d: out of order", i, v)
		}
	}
	if _, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "x"}}, SubInline()); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Subscribe with SubInline: %v, want ErrInvalidOption", err)
	}
	if _, _, err := c.SubscribeQueue(ctx, []TopicFilter{{Topic: "x"}}, SubInline()); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("SubscribeQueue with SubInline: %v, want ErrInvalidOption", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- sub.Unsubscribe(ctx) }()
	up, ok := pc.read().(*packet.Unsubscribe)
	if !ok {
		t.Fatal("peer: expected UNSUBSCRIBE")
	}
	pc.send(&packet.Unsuback{PacketID: up.PacketID, ReasonCodes: []packet.ReasonCode{0}})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	sub.mu.Lock()
	closed := sub.closed
	sub.mu.Unlock()
	if !closed {
		t.Fatal("subscription still open after Unsubscribe")
	}
}

func waitDone(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-testCtx(t).Done():
		t.Fatal("not every message arrived")
	}
}

// TestReceiveQoS1AckWriteNoAllocs: a QoS 1 message received alone (the broker waits for its
// PUBACK before the next) costs one write of its acknowledgement, and that write allocates
// nothing: zero-copy receive is 0 allocations per message at QoS 1 too, whatever the size
// of the read batches. Skipped under -race (its sync.Pool drops items on purpose).
func TestReceiveQoS1AckWriteNoAllocs(t *testing.T) {
	if raceBuild {
		t.Skip("allocation counts need a build without -race")
	}
	const warm, n = 500, 3000
	s := startBenchServer(t, func(nc net.Conn, r *packet.Reader) {
		f, err := r.ReadFrame() // SUBSCRIBE
		if err != nil {
			return
		}
		var sp packet.Subscribe
		sp.Decode(f.Flags(), f.Body)
		f.Release()
		nc.Write((&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1}}).AppendTo(nil))
		pub := packet.Publish{Topic: "rx", QoS: 1, Payload: make([]byte, 64)}
		if sp.SubscriptionID != 0 {
			pub.SubscriptionIDs = []uint32{sp.SubscriptionID}
		}
		var one []byte
		var ack [4]byte // PUBACK, success, no properties: 40 02 id id
		for i := range warm + n {
			pub.PacketID = uint16(i%1000 + 1)
			one = pub.AppendTo(one[:0])
			if _, err := nc.Write(one); err != nil {
				return
			}
			if _, err := io.ReadFull(nc, ack[:]); err != nil {
				return
			}
		}
	})
	c := benchClient(t, s.ln.Addr().String())
	ch, _, err := c.Subscribe(testCtx(t), []TopicFilter{{Topic: "rx", QoS: 1}}, SubZeroCopy())
	if err != nil {
		t.Fatal(err)
	}
	take := func(k int) {
		for range k {
			m := <-ch
			m.Ack()
		}
	}
	take(warm)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	take(n)
	runtime.ReadMemStats(&after)
	if per := float64(after.Mallocs-before.Mallocs) / n; per >= 0.1 {
		t.Fatalf("%.2f allocations per QoS 1 message received alone; want 0", per)
	}
}
