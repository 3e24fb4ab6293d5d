package tern

import (
	"context"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// A broker that answers a SUBSCRIBE's packet identifier with an UNSUBACK breaks the protocol
// ([MQTT-3.8.4-2]: the SUBACK carries the SUBSCRIBE's identifier): the client closes with
// 0x82 rather than leave Subscribe waiting for a SUBACK the broker thinks it sent.
func TestHostileWrongReplyTypeCloses(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "a", QoS: 1}})
		errc <- err
	}()
	sub, ok := pc.read().(*packet.Subscribe)
	if !ok {
		t.Fatal("first packet is not SUBSCRIBE")
	}
	pc.send(&packet.Unsuback{PacketID: sub.PacketID, ReasonCodes: []packet.ReasonCode{0}})
	if code := pc.expectDisconnect(); code != packet.ProtocolError {
		t.Fatalf("DISCONNECT %v, want protocol error", code)
	}
	waitFor(t, func() bool { return c.Stats().ConnectionLost == 1 })
	cancel()
	<-errc
}
