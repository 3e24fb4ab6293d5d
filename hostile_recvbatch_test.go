package tern

import (
	"context"
	"testing"

	"github.com/ternmq/tern/packet"
)

// TestHostilePartialFrameDoesNotHoldAcks: a broker that sends a PUBLISH followed by the
// first bytes of another packet, then waits, still gets the PUBACK for the whole one. The
// read batch (and the writer's cork) ends when no whole packet is buffered, never across a
// read that waits on the peer: "an acknowledgement never waits for the network".
// [MQTT-4.6.0-2] order is kept too: PUBACK 1 before PUBACK 2.
func TestHostilePartialFrameDoesNotHoldAcks(t *testing.T) {
	_, pc := subscribeAtPeer(t, func(c *Client) error {
		_, err := c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "b", QoS: 1}},
			func(*Message) {}, SubInline())
		return err
	})
	burst := recvBurst("b", 1, 2)
	first := len(burst) / 2 // the packets are the same size: the second starts here
	pc.sendRaw(burst[:first+3])
	if a, ok := pc.read().(*packet.Ack); !ok || a.PacketID != 1 {
		t.Fatalf("got %+v, want PUBACK 1 while the next packet is incomplete", a)
	}
	pc.sendRaw(burst[first+3:])
	if a, ok := pc.read().(*packet.Ack); !ok || a.PacketID != 2 {
		t.Fatalf("got %+v, want PUBACK 2", a)
	}
}
