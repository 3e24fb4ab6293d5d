package faultproxy

import (
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

func TestCountPublishes(t *testing.T) {
	pub := func(n int) []byte {
		p := packet.Publish{Topic: "t", QoS: 1, PacketID: 1, Payload: make([]byte, n)}
		return p.AppendTo(nil)
	}
	ping := (&packet.Pingreq{}).AppendTo(nil)
	var stream []byte
	stream = append(stream, pub(10)...)
	stream = append(stream, ping...)
	stream = append(stream, pub(300)...) // two-byte remaining length
	for _, tc := range []struct {
		b    []byte
		want int
	}{
		{nil, 0},
		{stream, 2},
		{stream[:len(stream)-1], 1}, // the last one is incomplete
		{stream[:3], 0},
	} {
		if got := countPublishes(tc.b); got != tc.want {
			t.Errorf("countPublishes(%d bytes) = %d, want %d", len(tc.b), got, tc.want)
		}
	}
}

// waitHeld waits until the proxy holds n publishes, with a deadline.
func waitHeld(t *testing.T, p *Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(prompt)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for p.HeldPublishes() < n {
		if time.Now().After(deadline) {
			t.Fatalf("held %d publishes, want %d", p.HeldPublishes(), n)
		}
		<-tick.C // polling a condition, with a deadline
	}
}

// Hold keeps back what current connections send (never forwarded, counted as PUBLISH
// packets); connections made later pass; Cut drops the held bytes and says how many
// connections it closed; Hold(false) throws the held bytes away and forwards again.
func TestHold(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := New(t, s.addr())
	a := dial(t, p.Addr())
	roundTrip(t, a, "before")
	p.Hold(true)
	pub := (&packet.Publish{Topic: "t", Payload: []byte("x")}).AppendTo(nil)
	write(t, a, pub)
	write(t, a, pub)
	waitHeld(t, p, 2)
	expectSilent(t, a) // nothing reached the echo server

	b := dial(t, p.Addr()) // accepted after Hold: not held
	roundTrip(t, b, "new connections pass")
	if n := p.HeldPublishes(); n != 2 {
		t.Fatalf("held %d, want 2", n)
	}
	p.Hold(false)
	if n := p.HeldPublishes(); n != 0 {
		t.Fatalf("held %d after Hold(false), want 0", n)
	}
	roundTrip(t, a, "after") // the held bytes were thrown away, not delivered late

	p.Hold(true)
	write(t, a, pub)
	waitHeld(t, p, 1)
	if n := p.Cut(); n != 2 {
		t.Fatalf("Cut closed %d connections, want 2", n)
	}
	expectClosed(t, a)
	if n := p.HeldPublishes(); n != 0 {
		t.Fatalf("held %d after Cut, want 0", n)
	}
	roundTrip(t, dial(t, p.Addr()), "after the cut")
}

// Start is for commands: loopback only, closed by the caller.
func TestStartLoopbackOnly(t *testing.T) {
	t.Parallel()
	if _, err := Start("0.0.0.0:0", "127.0.0.1:1"); err == nil {
		t.Fatal("Start on 0.0.0.0 succeeded")
	}
	s := startServer(t, echo)
	p, err := Start("127.0.0.1:0", s.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	roundTrip(t, dial(t, p.Addr()), "hello")
}
