package tern

import (
	"context"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// Hostile review of acknowledgement holds (ackhold.go): a hold must never keep an
// acknowledgement back for longer than its consumer needs to catch up, and at most
// ackHoldMax; acknowledgements stay in arrival order ([MQTT-4.6.0-2]).

// answerSubscribes answers n SUBSCRIBEs, granting QoS 1 (a real broker grants what the
// filter asked; these tests only need the subscription live).
func answerSubscribes(t *testing.T, pc *peerConn, n int) {
	t.Helper()
	for range n {
		sp, ok := pc.read().(*packet.Subscribe)
		if !ok {
			t.Fatal("peer: expected SUBSCRIBE")
		}
		rcs := make([]packet.ReasonCode, len(sp.Subscriptions))
		for i, f := range sp.Subscriptions {
			rcs[i] = packet.ReasonCode(f.QoS)
		}
		pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: rcs})
	}
}

// readAck reads the next packet and fails unless it is the acknowledgement kind of id.
func readAck(t *testing.T, pc *peerConn, kind packet.Type, id uint16) {
	t.Helper()
	a, ok := pc.read().(*packet.Ack)
	if !ok || a.Kind != kind || a.PacketID != id {
		t.Fatalf("peer: got %#v, want %v %d", a, kind, id)
	}
}

// TestHostileAckHoldAutoAckHoldsNothing: only a consumer that will acknowledge again in a
// moment may hold. An auto-acknowledged channel subscription's acknowledgements are made by
// the read loop (and the pump), never by its consumer, so a hold they started would be
// ended by nobody but the timer, and every acknowledgement of the client would wait for it.
// With the time bound out of the way, a queue consumer's Ack (which holds nothing) must
// still reach the broker while the auto-ack subscription has a backlog.
// Promise: a hold ends when its consumer catches up, not only by its time bound.
func TestHostileAckHoldAutoAckHoldsNothing(t *testing.T) {
	var q *Queue[*Message]
	_, pc, _ := connectPeerWith(t, func(c *Client) error {
		c.ackHoldMax = time.Hour
		// Nobody reads this one: its buffer keeps a backlog.
		_, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: "a", QoS: 1}},
			SubAutoAck(), SubBuffer(10))
		if err != nil {
			return err
		}
		q, _, err = c.SubscribeQueue(context.Background(), []TopicFilter{{Topic: "q", QoS: 1}})
		return err
	})
	pc.closeOnEOF()
	answerSubscribes(t, pc, 2)
	pc.sendRaw(recvBurst("a", 1, 2))
	readAck(t, pc, packet.PUBACK, 1)
	readAck(t, pc, packet.PUBACK, 2)
	pc.send(&packet.Publish{Topic: "q", QoS: 1, PacketID: 3, Payload: []byte{3}})
	m, ok := q.Pop(testCtx(t))
	if !ok {
		t.Fatal("queue subscription got nothing")
	}
	m.Ack()
	readAck(t, pc, packet.PUBACK, 3)
}

// TestHostileAckHoldAutoAckBurstBatched: an auto-acknowledged channel subscription's
// acknowledgements are the read loop's, and leave in the write that ends its read batch
// (ack coalescing), not one inline write each. 1,000 messages cost a handful of writes,
// in arrival order ([MQTT-4.6.0-2]).
func TestHostileAckHoldAutoAckBurstBatched(t *testing.T) {
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

// TestHostileAckHoldEndRace: a channel's hold is shared by every goroutine reading the
// channel. When one consumer ends the hold just as another begins it again, the new hold
// must still end by its time bound: ending the first must not cancel the second's timer,
// or the client-wide count of holds stays up for good and acknowledgements from goroutines
// that hold nothing (a queue consumer, the pump, a store's completion) never wake the
// writer.
// Promise: a hold never keeps acknowledgements back for longer than ackHoldMax.
func TestHostileAckHoldEndRace(t *testing.T) {
	c := &Client{} // no connection: the holds' writes do nothing
	h := newAckHold(c)
	h.endGap = func() {
		h.endGap = nil
		h.begin() // another consumer of the channel acknowledges right now
	}
	h.begin()
	h.end()
	deadline := time.Now().Add(10 * time.Second)
	for c.ackHolds.Load() != 0 || h.holding.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("a hold did not end within 10 s (holding %v, holds %d)", h.holding.Load(), c.ackHolds.Load())
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}
