package tern

import (
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
