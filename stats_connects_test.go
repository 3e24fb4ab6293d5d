package tern

import (
	"testing"

	"github.com/ternmq/tern/packet"
)

// Stats counts a connection before anything can happen on it: once a publish has been
// acknowledged over the n-th connection, Stats().Connects is at least n. (The counter was
// bumped after the connection went live, so TestResendToStricterBroker saw the resent
// message acknowledged and still read the old count.)
//
// The window is a few instructions wide, so the reconnection is repeated: before the fix
// every run under -race saw it within these repetitions.
func TestStatsCountConnectionBeforeUse(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, fastOpts...)
	for i := range 100 {
		pc.nc.Close() // the client reconnects at once
		done := publishAsync(t, c, PublishOptions{Topic: "count", QoS: 1})
		pc, _ = p.handshake(&packet.Connack{})
		pub := readPublish(t, pc)
		pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
		if err := waitErr(t, "publish", done); err != nil {
			t.Fatal(err)
		}
		if n, want := c.Stats().Connects, uint64(i+2); n != want {
			t.Fatalf("publish acknowledged over connection %d with Stats().Connects = %d", want, n)
		}
	}
}
