package proxy

import (
	"io"
	"net"
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

// TestHoldAndCut runs the proxy in front of an echo server.
func TestHoldAndCut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	p, err := Start(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	echo := func(msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q: %q %v", msg, got, err)
		}
	}
	echo("hello")

	p.Hold()
	held := (&packet.Publish{Topic: "t", Payload: []byte("x")}).AppendTo(nil)
	if _, err := c.Write(held); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.HeldPublishes() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := p.HeldPublishes(); n != 1 {
		t.Fatalf("held %d publishes, want 1", n)
	}
	p.Cut()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Cut")
	}
	if n := p.HeldPublishes(); n != 0 {
		t.Fatalf("%d publishes still held after Cut", n)
	}

	// A new connection passes again.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c = c2
	c.SetDeadline(time.Now().Add(5 * time.Second))
	echo("again")
}
