package tern

import (
	"bytes"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// An MQTT 3.1.1 broker cannot be told the client's Maximum Packet Size, and one that sends
// a larger message would send it again on every reconnect if the client closed for it:
// the session would be stuck for ever. The client reads past it, acknowledges it (as an
// MQTT 5 broker would have dropped it), counts and logs it, and the messages after it
// arrive. "A broker cannot make the client loop."
func TestV311OversizedPublishSkippedAndAcknowledged(t *testing.T) {
	p := newPeer(t)
	got := make(chan *Message, 4)
	c, pc, _ := start311(t, p, WithProtocol(MQTT311), WithMaximumPacketSize(1000), WithStats(),
		WithUnroutedHandler(func(m *Message) { got <- m }))
	big := bytes.Repeat([]byte{'x'}, 5000)
	send := func(pub *packet.Publish) {
		pub.Version = packet.Version311
		pc.sendRaw(pub.AppendTo(nil))
	}
	send(&packet.Publish{Topic: "big/1", QoS: 1, PacketID: 11, Payload: big})
	send(&packet.Publish{Topic: "big/2", QoS: 2, PacketID: 12, Payload: big})
	send(&packet.Publish{Topic: "big/0", QoS: 0, Payload: big})
	send(&packet.Publish{Topic: "small", QoS: 1, PacketID: 13, Payload: []byte("ok")})

	acks := map[packet.Type]uint16{}
	for len(acks) < 2 {
		switch a := readAt(t, pc, packet.Version311).(type) {
		case *packet.Ack:
			if a.PacketID != 13 {
				acks[a.Kind] = a.PacketID
			}
		default:
			t.Fatalf("unexpected %T", a)
		}
	}
	if acks[packet.PUBACK] != 11 || acks[packet.PUBREC] != 12 {
		t.Fatalf("acknowledgements %v, want PUBACK 11 and PUBREC 12", acks)
	}
	pc.sendRaw([]byte{0x62, 2, 0, 12}) // PUBREL 12
	select {
	case m := <-got:
		if m.Topic != "small" || string(m.Payload) != "ok" {
			t.Fatalf("received %q %q, want the small message", m.Topic, m.Payload)
		}
		m.Ack()
	case <-time.After(10 * time.Second):
		t.Fatal("the message after the oversized ones did not arrive")
	}
	seen := map[packet.Type]uint16{}
	for len(seen) < 2 {
		if a, ok := readAt(t, pc, packet.Version311).(*packet.Ack); ok {
			seen[a.Kind] = a.PacketID
		}
	}
	if seen[packet.PUBCOMP] != 12 || seen[packet.PUBACK] != 13 {
		t.Fatalf("then %v, want PUBCOMP 12 and PUBACK 13", seen)
	}
	if n := c.Stats().Oversized; n != 3 {
		t.Fatalf("Oversized = %d, want 3", n)
	}
	if !c.Connected() || c.Stats().ConnectionLost != 0 {
		t.Fatal("the connection did not stay up")
	}
}

// Any other oversized packet still closes an MQTT 3.1.1 connection: only a PUBLISH can be
// acknowledged in place.
func TestV311OversizedOtherPacketCloses(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := start311(t, p, WithProtocol(MQTT311), WithMaximumPacketSize(100), WithStats())
	// A SUBACK far above the limit, for an identifier nothing waits on.
	body := append([]byte{0, 1}, bytes.Repeat([]byte{0}, 300)...)
	pc.sendRaw(append([]byte{0x90, 0xAE, 0x02}, body...))
	waitFor(t, func() bool { return c.Stats().ConnectionLost == 1 })
	if n := c.Stats().Oversized; n != 0 {
		t.Fatalf("Oversized = %d for a SUBACK", n)
	}
}
