package tern

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// TestCallbackAcksHeld: a callback goroutine that takes a burst of QoS 1 messages sends
// their acknowledgements without waking the writer goroutine per message: they are held
// while it has messages to take and written when it runs out (ackhold.go). 1,000 messages
// wake the writer a handful of times at most, and every PUBACK is sent in arrival order
// ([MQTT-4.6.0-2]).
func TestCallbackAcksHeld(t *testing.T) {
	testAcksHeld(t, func(c *Client, fn func(*Message)) error {
		_, err := c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "b", QoS: 1}}, fn, SubBuffer(2000))
		return err
	})
}

// TestChannelAcksHeld: the same for a channel consumer, which holds while the channel has
// more messages and writes when it has caught up.
func TestChannelAcksHeld(t *testing.T) {
	testAcksHeld(t, func(c *Client, fn func(*Message)) error {
		ch, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: "b", QoS: 1}}, SubBuffer(2000))
		if err == nil {
			go consume(ch, fn)
		}
		return err
	})
}

// consume calls fn and Ack for each message of ch until it is closed.
func consume(ch <-chan *Message, fn func(*Message)) {
	for m := range ch {
		fn(m)
		m.Ack()
	}
}

func testAcksHeld(t *testing.T, sub func(c *Client, fn func(*Message)) error) {
	const n = 1000
	var got atomic.Int32
	c, pc := subscribeAtPeer(t, func(c *Client) error {
		return sub(c, func(*Message) { got.Add(1) })
	})
	if w := burstAckWakes(t, c, pc, "b", n); w > 10 {
		t.Fatalf("%d acknowledgements from the consumer woke the writer %d times; want a handful", n, w)
	}
	if g := got.Load(); g != 2*n {
		t.Fatalf("callback saw %d messages, want %d", g, 2*n)
	}
}

// TestAckHoldBounded: a hold never keeps an acknowledgement back for good. The callback for
// the second of two messages waits for a message on another subscription, which the broker
// sends only once it has the first message's PUBACK (a broker whose window is full). That
// PUBACK is held while the callback goroutine still has the second message to take; the
// hold's time bound (ackHoldMax) must release it, or the client and the broker wait on each
// other for good.
func TestAckHoldBounded(t *testing.T) {
	t.Run("callback", func(t *testing.T) {
		testAckHoldBounded(t, func(c *Client, fn func(*Message)) error {
			_, err := c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "b", QoS: 1}}, fn)
			return err
		})
	})
	t.Run("channel", func(t *testing.T) {
		testAckHoldBounded(t, func(c *Client, fn func(*Message)) error {
			ch, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: "b", QoS: 1}})
			if err == nil {
				go consume(ch, fn)
			}
			return err
		})
	})
}

func testAckHoldBounded(t *testing.T, sub func(c *Client, fn func(*Message)) error) {
	var other <-chan *Message
	_, pc, _ := connectPeerWith(t, func(c *Client) error {
		var err error
		if other, _, err = c.Subscribe(context.Background(), []TopicFilter{{Topic: "c", QoS: 1}}); err != nil {
			return err
		}
		return sub(c, func(m *Message) {
			if m.Payload[0] == 1 { // the second message: wait for the other subscription's
				select {
				case o := <-other:
					o.Ack()
				case <-time.After(20 * time.Second):
				}
			}
		})
	})
	for range 2 {
		sp, ok := pc.read().(*packet.Subscribe)
		if !ok {
			t.Fatal("peer: expected SUBSCRIBE")
		}
		pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1}})
	}
	// Both in one write: one read batch, both queued before the callback goroutine runs.
	pc.sendRaw(recvBurst("b", 1, 2))
	a, ok := pc.read().(*packet.Ack)
	if !ok || a.Kind != packet.PUBACK || a.PacketID != 1 {
		t.Fatalf("want PUBACK 1 while the second callback waits, got %#v", a)
	}
	pc.send(&packet.Publish{Topic: "c", QoS: 1, PacketID: 3, Payload: []byte{2}})
	for _, id := range []uint16{2, 3} {
		a, ok := pc.read().(*packet.Ack)
		if !ok || a.PacketID != id {
			t.Fatalf("want PUBACK %d, got %#v", id, a)
		}
	}
}
