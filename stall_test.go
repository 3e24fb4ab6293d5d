package tern

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

// A Block subscription whose consumer has stalled must not stop the client's own QoS 1
// publishes: their PUBACKs are read while the subscription's messages wait, unacknowledged,
// within the Receive Maximum (issue 9, point 13). Afterwards the consumer gets every
// message, in order.
func TestStalledBlockSubscriberDoesNotStallPublishes(t *testing.T) {
	const n, window = 300, 40
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	brokerLogOnFailure(t, b)
	c, err := New(WithBroker(b.URL), WithStats(), WithReceiveMaximum(window), failureLog(t, "client"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := faultCtx(t, 60*time.Second)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	// Buffer 1 and nobody reading: full after the first message.
	ch, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "stall/in", QoS: 1}}, SubBuffer(1))
	if err != nil {
		t.Fatal(err)
	}

	// Each publish is bounded, so a read loop stuck behind the consumer fails the test
	// instead of hanging it.
	pubCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res := publishSeq(pubCtx, c, 0, n, 8, func(int) PublishOptions {
		return PublishOptions{Topic: "stall/in", QoS: 1}
	}, nil)
	res.check(t, "publishes while the subscriber is stalled")
	// A publish after the rest, on a topic nobody reads, for good measure.
	if err := c.Publish(pubCtx, PublishOptions{Topic: "stall/other", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatalf("unrelated publish: %v", err)
	}
	if t.Failed() {
		return
	}

	// Now the consumer wakes up: everything arrives, in the order the broker sent it.
	seen := make(map[int]bool, n)
	last := -1
	for len(seen) < n {
		select {
		case m := <-ch:
			v, err := strconv.Atoi(string(m.Payload))
			if err != nil {
				t.Fatalf("payload %q", m.Payload)
			}
			if !m.Dup && seen[v] {
				t.Fatalf("message %d delivered twice", v)
			}
			seen[v] = true
			last = v
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("received %d of %d (last %d); stats %+v", len(seen), n, last, c.Stats())
		}
	}
	if st := c.Stats(); st.ReadStalls != 0 || st.Unrouted != 0 {
		t.Errorf("stats %+v: the read loop waited for the consumer", st)
	}
}

// The trade-off Block keeps for QoS 0: no window bounds QoS 0, so a QoS 0 message into a
// full Block subscription makes the read loop wait for the consumer (counted), and nothing
// is lost once it catches up. The scripted peer stands in for the broker so that the
// order of packets is exact.
func TestBlockQoS0StallsReadLoop(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ch, _, err := subscribeVia(t, c, pc, "q0", 0, SubBuffer(1))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		pc.send(&packet.Publish{Topic: "q0", Payload: []byte(fmt.Sprint(i))})
	}
	// The third message waits for room: the read loop is stalled, counted once.
	waitFor(t, func() bool { return c.Stats().ReadStalls == 1 })
	for i := range 3 {
		if m := recv(t, ch); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q, want %d", m.Payload, i)
		}
	}
}

// A QoS 0 message never overtakes QoS 1 messages held for a Block subscription: it waits
// behind them (stopping the read loop), and the consumer sees arrival order.
func TestBlockQoS0WaitsBehindHeld(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ch, _, err := subscribeVia(t, c, pc, "mix", 1, SubBuffer(1), SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	pc.send(&packet.Publish{Topic: "mix", QoS: 1, PacketID: 1, Payload: []byte("a")})
	pc.send(&packet.Publish{Topic: "mix", QoS: 1, PacketID: 2, Payload: []byte("b")}) // held
	pc.send(&packet.Publish{Topic: "mix", QoS: 0, Payload: []byte("c")})              // waits
	pc.send(&packet.Publish{Topic: "mix", QoS: 1, PacketID: 3, Payload: []byte("d")})
	waitFor(t, func() bool { return c.Stats().ReadStalls == 1 })
	for _, want := range []string{"a", "b", "c", "d"} {
		if m := recv(t, ch); string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
	}
	// Auto-acknowledged as each entered the buffer, in arrival order.
	if got := fmt.Sprint(readAcks(t, pc, 3)); got != "[1 2 3]" {
		t.Fatalf("acks %s", got)
	}
}
