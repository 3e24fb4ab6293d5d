package tern

import (
	"testing"

	"github.com/ternmq/tern/packet"
)

// What the client's QoS 2 receipts guarantee across a reconnection, and where it ends
// (TestFaultBrokerRestart relies on both halves):
//   - while the client holds the receipt (PUBLISH seen, PUBCOMP not yet sent), a resend on a
//     later connection is answered with PUBREC and never delivered again;
//   - once it has sent PUBCOMP the identifier is free ([MQTT-4.3.3-6] forbids the broker to
//     send that PUBLISH again after PUBREL), so a DUP=1 PUBLISH under it is a new message
//     whose first copy never arrived, and is delivered: an acknowledged message is never
//     lost, even when its bytes equal the completed one's.
func TestInboundQoS2ReceiptAcrossReconnect(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, append(fastOpts, WithClientID("rcpt"))...)
	ch, _, err := subscribeVia(t, c, pc, "r", 2)
	if err != nil {
		t.Fatal(err)
	}
	expectAck := func(pc *peerConn, kind packet.Type, id uint16) {
		t.Helper()
		if a, ok := pc.read().(*packet.Ack); !ok || a.Kind != kind || a.PacketID != id {
			t.Fatalf("got %+v, want %v %d", a, kind, id)
		}
	}
	expectMsg := func(payload string) {
		t.Helper()
		m := recv(t, ch)
		if string(m.Payload) != payload {
			t.Fatalf("delivered %q, want %q", m.Payload, payload)
		}
		m.Ack()
	}
	// 7 stays open at PUBREC; 8 completes.
	pc.send(&packet.Publish{Topic: "r", QoS: 2, PacketID: 7, Payload: []byte("a")})
	expectMsg("a")
	expectAck(pc, packet.PUBREC, 7)
	pc.send(&packet.Publish{Topic: "r", QoS: 2, PacketID: 8, Payload: []byte("b")})
	expectMsg("b")
	expectAck(pc, packet.PUBREC, 8)
	pc.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 8})
	expectAck(pc, packet.PUBCOMP, 8)
	pc.nc.Close()

	pc2, _ := p.handshake(&packet.Connack{SessionPresent: true})
	pc2.send(&packet.Publish{Topic: "r", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("a")})
	expectAck(pc2, packet.PUBREC, 7)
	pc2.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	expectAck(pc2, packet.PUBCOMP, 7)
	// PUBCOMP 7 answers what followed the resend, so the resend has been handled.
	select {
	case m := <-ch:
		t.Fatalf("resend delivered again while the receipt held it: %q", m.Payload)
	default:
	}

	for _, payload := range []string{"c", "b"} {
		pc2.send(&packet.Publish{Topic: "r", QoS: 2, PacketID: 8, Dup: true, Payload: []byte(payload)})
		expectMsg(payload)
		expectAck(pc2, packet.PUBREC, 8)
		pc2.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 8})
		expectAck(pc2, packet.PUBCOMP, 8)
	}
}
