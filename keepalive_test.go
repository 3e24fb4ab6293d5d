package tern

import (
	"errors"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// A quiet connection gets PINGREQ; a peer that stops answering is detected within keepalive
// plus ping timeout and the connection is closed.
func TestKeepAlivePingAndDeadPeer(t *testing.T) {
	p := newPeer(t)
	down := make(chan error, 1)
	start := time.Now()
	_, pc, cp := connectPeer(t, p, &packet.Connack{}, WithKeepAlive(time.Second),
		WithPingTimeout(500*time.Millisecond),
		WithOnConnectionDown(func(err error) bool { down <- err; return false }))
	if cp.KeepAlive != 1 {
		t.Fatalf("CONNECT keepalive %d, want 1", cp.KeepAlive)
	}
	// First ping: answer it.
	if _, ok := pc.read().(*packet.Pingreq); !ok {
		t.Fatal("expected PINGREQ")
	}
	pc.send(&packet.Pingresp{})
	// Second ping: stay silent, like a dead peer.
	if _, ok := pc.read().(*packet.Pingreq); !ok {
		t.Fatal("expected a second PINGREQ")
	}
	silentFrom := time.Now()
	select {
	case err := <-down:
		if !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("connection down with %v", err)
		}
		// Generous bound: keepalive + ping timeout + ticker granularity, on a loaded machine.
		if d := time.Since(silentFrom); d > 3*time.Second {
			t.Fatalf("dead peer detected after %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("dead peer not detected (connected %v ago)", time.Since(start))
	}
}

// The broker's Server Keep Alive replaces the client's own keepalive.
func TestServerKeepAliveHonoured(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{ServerKeepAlive: packet.Ptr(uint16(1))}, WithKeepAlive(time.Hour))
	if c.Info().KeepAlive != time.Second {
		t.Fatalf("keepalive in force %v, want 1s", c.Info().KeepAlive)
	}
	if _, ok := pc.read().(*packet.Pingreq); !ok {
		t.Fatal("expected PINGREQ at the server's keepalive")
	}
	pc.send(&packet.Pingresp{})
}

// A DISCONNECT from the broker reaches the callbacks with its reason code and properties.
func TestServerDisconnectSurfaced(t *testing.T) {
	p := newPeer(t)
	got := make(chan *packet.Disconnect, 1)
	down := make(chan error, 1)
	_, pc, _ := connectPeer(t, p, &packet.Connack{},
		WithOnServerDisconnect(func(d *packet.Disconnect) { got <- d }),
		WithOnConnectionDown(func(err error) bool { down <- err; return false }))
	pc.send(&packet.Disconnect{ReasonCode: packet.ServerShuttingDown, ReasonString: "maintenance",
		UserProperties: []packet.UserProperty{{Key: "k", Value: "v"}}})
	select {
	case d := <-got:
		if d.ReasonCode != packet.ServerShuttingDown || d.ReasonString != "maintenance" || len(d.UserProperties) != 1 {
			t.Fatalf("got %+v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no server disconnect callback")
	}
	err := <-down
	var de *DisconnectError
	if !errors.As(err, &de) || de.Packet.ReasonCode != packet.ServerShuttingDown {
		t.Fatalf("connection down with %v, want a DisconnectError", err)
	}
}
