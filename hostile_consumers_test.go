package tern

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// Consumers against a hostile or strict peer: acknowledgements leave in arrival order
// ([MQTT-4.6.0-2]), batched per read, whatever the consumer form and however slow it is.

// TestHostileAutoAckBurstBatched: an auto-acknowledged channel subscription's
// acknowledgements are the read loop's, and leave in the write that ends its read batch
// (ack coalescing), not one inline write each. 1,000 messages cost a handful of writes,
// in arrival order ([MQTT-4.6.0-2]).
func TestHostileAutoAckBurstBatched(t *testing.T) {
	const n = 1000
	c, pc := subscribeAtPeer(t, func(c *Client) error {
		ch, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: "b", QoS: 1}},
			SubAutoAck(), SubBuffer(2*n))
		if err == nil {
			go func() {
				for range ch {
				}
			}()
		}
		return err
	})
	pc.closeOnEOF()
	// The first burst moves the reader to its large buffer; the second is measured.
	pc.sendRaw(recvBurst("b", 1, n))
	readAcksInOrder(t, pc, n)
	before := connWrites(c)
	pc.sendRaw(recvBurst("b", 1, n))
	readAcksInOrder(t, pc, n)
	if w := connWrites(c) - before; w > 10 {
		t.Fatalf("%d auto-acknowledged messages took %d writes; want a handful", n, w)
	}
}

// connWrites returns how many writes the live connection has made.
func connWrites(c *Client) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.w.writes.Load()
}

// TestHostileSlowConsumerAcks: a callback that takes 50 ms per message acknowledges every
// message, in arrival order ([MQTT-4.6.0-2]), with nothing left behind.
func TestHostileSlowConsumerAcks(t *testing.T) {
	const n = 5
	_, pc := subscribeAtPeer(t, func(c *Client) error {
		_, err := c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "s", QoS: 1}},
			func(*Message) { time.Sleep(50 * time.Millisecond) }) // slow work, not synchronisation
		return err
	})
	pc.closeOnEOF()
	pc.sendRaw(recvBurst("s", 1, n))
	readAcksInOrder(t, pc, n)
}

// strictBroker plays a broker that keeps the client's Receive Maximum exactly: it sends
// window messages, then one more for each PUBACK it reads, until total have been
// acknowledged, checking that PUBACKs come in the order it sent ([MQTT-4.6.0-2]). It answers
// PINGREQ and returns how long the exchange took.
func strictBroker(t *testing.T, pc *peerConn, topic string, window, total int) time.Duration {
	t.Helper()
	start := time.Now()
	var order []uint16 // identifiers sent and not yet acknowledged, in order
	sent, acked := 0, 0
	send := func(id uint16) {
		pc.send(&packet.Publish{Topic: topic, QoS: 1, PacketID: id, Payload: []byte{byte(sent)}})
		order = append(order, id)
		sent++
	}
	for i := range min(window, total) {
		send(uint16(i + 1))
	}
	for acked < total {
		switch p := pc.read().(type) {
		case *packet.Ack:
			if p.Kind != packet.PUBACK || p.PacketID != order[0] {
				t.Fatalf("peer: got %v %d, want PUBACK %d", p.Kind, p.PacketID, order[0])
			}
			order = order[1:]
			acked++
			if sent < total {
				send(p.PacketID)
			}
		case *packet.Pingreq:
			pc.send(&packet.Pingresp{})
		default:
			t.Fatalf("peer: unexpected %T", p)
		}
	}
	return time.Since(start)
}

// TestHostileStrictReceiveWindow: against a broker that sends the next message only once
// it has an acknowledgement (a small Receive Maximum kept exactly), every consumer form
// gets through: no acknowledgement waits for something that only more messages would
// bring. The rates are logged for the record, not asserted (no wall-clock thresholds).
// [MQTT-4.9.0-2]: the broker sends no more than Receive Maximum unacknowledged messages.
func TestHostileStrictReceiveWindow(t *testing.T) {
	const total = 1000
	ackAll := func(ch <-chan *Message) {
		for m := range ch {
			m.Ack()
		}
	}
	drain := func(ch <-chan *Message) {
		for range ch {
		}
	}
	forms := []struct {
		name string
		sub  func(c *Client) error
	}{
		{"channel", func(c *Client) error {
			ch, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: "w", QoS: 1}})
			if err == nil {
				go ackAll(ch)
			}
			return err
		}},
		{"channel, buffer 1", func(c *Client) error {
			ch, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: "w", QoS: 1}}, SubBuffer(1))
			if err == nil {
				go ackAll(ch)
			}
			return err
		}},
		{"channel auto-ack, buffer 1", func(c *Client) error {
			ch, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: "w", QoS: 1}}, SubBuffer(1), SubAutoAck())
			if err == nil {
				go drain(ch)
			}
			return err
		}},
		{"callback", func(c *Client) error {
			_, err := c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "w", QoS: 1}}, func(*Message) {})
			return err
		}},
		{"callback, buffer 1", func(c *Client) error {
			_, err := c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "w", QoS: 1}}, func(*Message) {}, SubBuffer(1))
			return err
		}},
	}
	for _, f := range forms {
		for _, window := range []int{1, 4, 16} {
			_, pc := subscribeAtPeer(t, f.sub, WithReceiveMaximum(uint16(window)))
			pc.closeOnEOF()
			d := strictBroker(t, pc, "w", window, total)
			t.Logf("%-27s Receive Maximum %2d: %6.0f msg/s", f.name, window, total/d.Seconds())
		}
	}
}

// TestHostileGroupCallbackAcks: a ClientGroup callback's acknowledgements go to the
// writer of the member each message came from. Two members on two
// Mosquitto brokers, each granting the broker a window of 4 (WithReceiveMaximum): 200 QoS 1
// messages per member all reach the callback, which needs every PUBACK to leave.
// [MQTT-4.9.0-2]: the broker sends no more than Receive Maximum unacknowledged messages.
func TestHostileGroupCallbackAcks(t *testing.T) {
	const n = 200
	ba, bb := twoBrokers(t)
	g := newTestGroup(t, []string{ba.URL, bb.URL}, WithGroupOptions(WithReceiveMaximum(4)))
	ctx := testCtx(t)
	var got atomic.Int32
	all := make(chan struct{})
	if _, err := g.SubscribeCallback(ctx, []TopicFilter{{Topic: "gh/x", QoS: 1}}, func(*Message) {
		if got.Add(1) == 2*n {
			close(all)
		}
	}); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{ba.URL, bb.URL} {
		pub := newTestClient(t, url)
		for i := range n {
			if _, err := pub.PublishAsync(ctx, PublishOptions{Topic: "gh/x", QoS: 1, Payload: []byte{byte(i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatalf("the group callback got %d of %d messages", got.Load(), 2*n)
	}
}
