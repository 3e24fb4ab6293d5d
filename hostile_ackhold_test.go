package tern

import (
	"context"
	"sync"
	"sync/atomic"
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

// heldAckConsumer subscribes a channel consumer to topic that takes one message,
// acknowledges it while the channel still has more (so the acknowledgement is held; with
// ackHoldMax an hour, for good unless something else writes it), reports that on acked and
// waits for resume before it goes on taking and acknowledging the rest.
func heldAckConsumer(t *testing.T, c *Client, topic string) (acked <-chan struct{}, resume func(), err error) {
	c.ackHoldMax = time.Hour
	ch, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: topic, QoS: 1}})
	if err != nil {
		return nil, nil, err
	}
	a, r := make(chan struct{}), make(chan struct{})
	var once sync.Once
	resume = func() { once.Do(func() { close(r) }) }
	t.Cleanup(resume)
	go func() {
		first := true
		for m := range ch {
			m.Ack()
			if first {
				first = false
				close(a)
				<-r
			}
		}
	}()
	return a, resume, nil
}

// TestHostileAckHoldKeepalive: PINGREQ is never held. A consumer holds an acknowledgement
// for good (its bound lengthened to an hour) and the connection goes quiet: the keepalive
// still writes PINGREQ (sendUrgent wakes the writer), taking the held PUBACK with it, and
// keeps doing so, so a broker never closes the connection for a missing ping.
// [MQTT-3.1.2-22]: the client must send a packet within the Keep Alive.
func TestHostileAckHoldKeepalive(t *testing.T) {
	var acked <-chan struct{}
	_, pc, _ := connectPeerWith(t, func(c *Client) error {
		var err error
		acked, _, err = heldAckConsumer(t, c, "k")
		return err
	}, WithKeepAlive(time.Second))
	pc.closeOnEOF()
	answerSubscribes(t, pc, 1)
	pc.sendRaw(recvBurst("k", 1, 2))
	<-acked
	puback, pings := false, 0
	for pings < 2 {
		switch p := pc.read().(type) {
		case *packet.Ack:
			if p.Kind != packet.PUBACK || p.PacketID != 1 || puback {
				t.Fatalf("peer: got %v %d, want one PUBACK 1", p.Kind, p.PacketID)
			}
			puback = true
		case *packet.Pingreq:
			pings++
			pc.send(&packet.Pingresp{})
		default:
			t.Fatalf("peer: unexpected %T", p)
		}
	}
	if !puback {
		t.Fatal("the held PUBACK did not leave with PINGREQ")
	}
}

// TestHostileAckHoldDisconnect: acknowledgements held when the application disconnects are
// written before DISCONNECT, so the broker does not send again what the consumer took.
// Promise: Disconnect flushes every acknowledgement made before it.
func TestHostileAckHoldDisconnect(t *testing.T) {
	var acked <-chan struct{}
	c, pc, _ := connectPeerWith(t, func(c *Client) error {
		var err error
		acked, _, err = heldAckConsumer(t, c, "d")
		return err
	})
	answerSubscribes(t, pc, 1)
	pc.sendRaw(recvBurst("d", 1, 2))
	<-acked
	done := make(chan error, 1)
	go func() { done <- c.Disconnect(testCtx(t)) }()
	readAck(t, pc, packet.PUBACK, 1)
	if rc := pc.expectDisconnect(); rc != packet.Success {
		t.Fatalf("DISCONNECT reason %v", rc)
	}
	pc.nc.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestHostileAckHoldReconnect: a hold outlives the connection it began on. The consumer
// holds an acknowledgement for good when the connection is cut; after the reconnection
// (session resumed) it goes on: the new connection's acknowledgements leave when it
// catches up, and nothing the old connection held (PUBACK 1) is written on the new one.
// [MQTT-4.4.0-1]: on a resumed session the broker resends unacknowledged messages, which
// the client acknowledges on the new connection.
func TestHostileAckHoldReconnect(t *testing.T) {
	p := newPeer(t)
	c, err := New(WithBroker(p.url()), WithReconnectBackoff(ConstantBackoff(time.Millisecond)),
		WithClientID("holdrev"), WithCleanStart(false), WithSessionExpiry(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	acked, resume, err := heldAckConsumer(t, c, "r")
	if err != nil {
		t.Fatal(err)
	}
	pc1, _ := startAtPeer(t, p, c, &packet.Connack{})
	answerSubscribes(t, pc1, 1)
	pc1.sendRaw(recvBurst("r", 1, 2))
	<-acked
	pc1.nc.Close() // the cut

	pc2, _ := p.handshake(&packet.Connack{SessionPresent: true})
	pc2.closeOnEOF()
	// The broker resends the unacknowledged message 2 and sends a new one.
	pc2.send(&packet.Publish{Topic: "r", QoS: 1, PacketID: 2, Dup: true, Payload: []byte{2}})
	pc2.send(&packet.Publish{Topic: "r", QoS: 1, PacketID: 3, Payload: []byte{3}})
	resume()
	readAck(t, pc2, packet.PUBACK, 2)
	readAck(t, pc2, packet.PUBACK, 3)
	if !pc2.quiet(50 * time.Millisecond) {
		t.Fatal("the new connection carried more than the acknowledgements of its own messages")
	}
}

// TestHostileAckHoldSlowConsumer: a callback that takes 50 ms per message (it holds while
// it still has messages, and its hold's bound passes while it works) acknowledges every
// message, in arrival order ([MQTT-4.6.0-2]), with nothing left behind.
func TestHostileAckHoldSlowConsumer(t *testing.T) {
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

// TestHostileAckHoldStrictWindow: against a broker that sends the next message only once
// it has an acknowledgement (a small Receive Maximum kept exactly), every consumer form
// gets through, even with the hold's time bound lengthened to an hour: a hold never waits
// for its bound once the consumer has caught up, which would make the exchange crawl at
// one window per ackHoldMax (or, with the hour, stall). The rates are logged
// for the record, not asserted (no wall-clock thresholds in tests).
// Promise: a hold ends when its consumer catches up; [MQTT-4.9.0-2] the broker sends no
// more than Receive Maximum unacknowledged messages.
func TestHostileAckHoldStrictWindow(t *testing.T) {
	const total = 1000
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
				go consume(ch, func(*Message) {})
			}
			return err
		}},
		{"channel, buffer 1", func(c *Client) error {
			ch, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: "w", QoS: 1}}, SubBuffer(1))
			if err == nil {
				go consume(ch, func(*Message) {})
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
	// First with the hold's time bound out of the way: an exchange that needs it stalls.
	for _, bound := range []time.Duration{time.Hour, ackHoldMax} {
		for _, f := range forms {
			for _, window := range []int{1, 4, 16} {
				_, pc := subscribeAtPeer(t, func(c *Client) error {
					c.ackHoldMax = bound
					return f.sub(c)
				}, WithReceiveMaximum(uint16(window)))
				pc.closeOnEOF()
				d := strictBroker(t, pc, "w", window, total)
				t.Logf("hold bound %-6v %-27s Receive Maximum %2d: %6.0f msg/s",
					bound, f.name, window, total/d.Seconds())
			}
		}
	}
}

// TestHostileAckHoldGroupCallback: ClientGroup.SubscribeCallback gives its callback
// goroutine no hold (its messages come from several members, each with its own writer), so
// its acknowledgements must wake each member's writer themselves. Two members on two
// Mosquitto brokers, each granting the broker a window of 4 (WithReceiveMaximum): 200 QoS 1
// messages per member all reach the callback, which needs every PUBACK to leave.
// [MQTT-4.9.0-2]: the broker sends no more than Receive Maximum unacknowledged messages.
func TestHostileAckHoldGroupCallback(t *testing.T) {
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
