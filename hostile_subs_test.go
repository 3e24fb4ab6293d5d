package tern

import (
	"fmt"
	"testing"

	"github.com/ternmq/tern/packet"
)

// A broker must not send more unacknowledged QoS 1/2 messages than the client's Receive
// Maximum (§4.9 flow control). One that does cannot make a stalled Block subscription hold
// unbounded memory: past the hold cap (the Receive Maximum) the read loop waits for the
// consumer, the wait is counted, and nothing is lost or reordered.
func TestHostileOverrunMeetsHoldCap(t *testing.T) {
	const window, n = 2, 8
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, WithReceiveMaximum(window))
	ch, s, err := subscribeVia(t, c, pc, "over", 1, SubBuffer(1))
	if err != nil {
		t.Fatal(err)
	}
	sendQoS1(pc, "over", n) // far past the window of 2, none acknowledged
	// One in the buffer, the hold list full (plus the one the pump is handing over), then
	// the read loop stops at the cap.
	waitFor(t, func() bool { return c.Stats().ReadStalls == 1 })
	s.heldMu.Lock()
	held := len(s.held)
	s.heldMu.Unlock()
	if held > window {
		t.Fatalf("%d messages held, above the cap %d", held, window)
	}
	if d := c.Stats().Delivered; d >= n {
		t.Fatalf("%d of %d delivered while the consumer is stalled: no cap", d, n)
	}
	for i := range n {
		m := recv(t, ch)
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q, want %d", m.Payload, i)
		}
		m.Ack()
	}
	if got := fmt.Sprint(readAcks(t, pc, n)); got != "[1 2 3 4 5 6 7 8]" {
		t.Fatalf("acks %s", got)
	}
}
