package tern

import (
	"testing"

	"github.com/ternmq/tern/packet"
)

// Hostile-broker scenarios for the client's security and resource limits: server redirects,
// inbound packet size, reason codes a packet may not carry. Each names the rule or promise
// it defends.

// [MQTT-3.14.2-1] A DISCONNECT whose reason code is not in the DISCONNECT table is malformed:
// the client answers DISCONNECT 0x81 and does not take it for the broker's reason.
func TestHostileDisconnectReasonCodeNotInTable(t *testing.T) {
	for _, code := range []byte{0x01, 0x18, 0x86, 0x91, 0xA3} {
		t.Run(packet.ReasonCode(code).String(), func(t *testing.T) {
			p := newPeer(t)
			var got []*packet.Disconnect
			c, pc, _ := connectPeer(t, p, &packet.Connack{},
				WithOnServerDisconnect(func(d *packet.Disconnect) { got = append(got, d) }))
			pc.sendRaw([]byte{byte(packet.DISCONNECT) << 4, 1, code})
			if rc := pc.expectDisconnect(); rc != packet.MalformedPacket {
				t.Fatalf("DISCONNECT %v, want malformed packet", rc)
			}
			c.Disconnect(testCtx(t)) // runs the callbacks already posted
			if len(got) != 0 {
				t.Fatalf("server disconnect reported: %+v", got[0])
			}
		})
	}
}
