package tern

import (
	"context"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// The owner's broker list wins over a server's reference: SetBrokers forgets any redirect,
// including one an attempt in progress would remember when it succeeds. Here broker A moves
// the client to B (CONNACK 0x9D); while the client waits for B's CONNACK the owner sets the
// list to C. When B's connection ends, the next attempt must go to C, not back to B.
func TestSetBrokersDuringMovedAttemptForgetsRedirect(t *testing.T) {
	a, b, cpeer := newPeer(t), newPeer(t), newPeer(t)
	c, err := New(WithBroker(a.url()), WithStats(), WithReconnectBackoff(ConstantBackoff(10*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})

	a.handshake(&packet.Connack{ReasonCode: packet.ServerMoved, ServerReference: b.ln.Addr().String()})
	pcB := b.accept()
	if _, ok := pcB.read().(*packet.Connect); !ok {
		t.Fatal("B: first packet is not CONNECT")
	}
	// The attempt to B is in progress: its CONNACK has not been sent.
	if err := c.SetBrokers(cpeer.url()); err != nil {
		t.Fatal(err)
	}
	pcB.send(&packet.Connack{})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	pcB.nc.Close() // B goes away: the client reconnects
	expectReconnectAt(t, cpeer, b, "the reconnect went to the redirect target B, which SetBrokers had dropped")
}

// expectReconnectAt waits for the client's next connection: it must come to want, which
// accepts it, and not to wrong (failing with why).
func expectReconnectAt(t *testing.T, want, wrong *peer, why string) {
	t.Helper()
	select {
	case pc := <-want.conns:
		if _, ok := pc.read().(*packet.Connect); !ok {
			t.Fatal("first packet is not CONNECT")
		}
		pc.send(&packet.Connack{})
	case <-wrong.conns:
		t.Fatal(why)
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect within 10s")
	}
}

// A server reference on a DISCONNECT that a connection made under an older broker list
// receives is not followed: SetBrokers has replaced that list since the connection was
// made, and the owner's list wins over the old server's say.
func TestSetBrokersThenMovedDisconnectIgnored(t *testing.T) {
	a, b, cpeer := newPeer(t), newPeer(t), newPeer(t)
	c, pc, _ := connectPeer(t, a, &packet.Connack{}, fastOpts...)
	if err := c.SetBrokers(cpeer.url()); err != nil {
		t.Fatal(err)
	}
	pc.send(&packet.Disconnect{ReasonCode: packet.ServerMoved, ServerReference: "mqtt://" + b.ln.Addr().String()})
	expectReconnectAt(t, cpeer, b, "followed a server reference from a connection made under the replaced broker list")
	waitFor(t, func() bool { return c.Connected() && c.Info().Broker == cpeer.url() })
}
