package broker

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ternmq/tern/packet"
)

// wedge is a mochi hook that blocks the read loop of one client on a channel, as mochi's own
// deadlock does ("mochi behaviours met" 8 in cmd/tern/README.md: a recursive read lock of a
// client's in-flight map against a writer): closing the client's connection does not wake it.
type wedge struct {
	mqtt.HookBase
	client  string
	entered chan struct{} // closed when the read loop is blocked
	release chan struct{} // closed at the end of the test
	once    sync.Once
}

func (w *wedge) ID() string { return "wedge" }

func (w *wedge) Provides(b byte) bool { return b == mqtt.OnPacketProcessed }

func (w *wedge) OnPacketProcessed(cl *mqtt.Client, _ packets.Packet, _ error) {
	if cl.ID != w.client {
		return
	}
	w.once.Do(func() { close(w.entered) })
	<-w.release
}

// Close returns, with an error and a count, when mochi's goroutines stay blocked after
// their connections are closed: a deadlocked mochi made a test binary hang until its
// 40-minute timeout, Close waiting for goroutines that nothing could wake.
// (A give-up must be visible: error, counter, log.)
func TestCloseAbandonsWedgedServer(t *testing.T) {
	w := &wedge{client: "wedged", entered: make(chan struct{}), release: make(chan struct{})}
	b := start(t, Options{CloseGrace: 200 * time.Millisecond, AbandonAfter: 200 * time.Millisecond, Hooks: []mqtt.Hook{w}})
	t.Cleanup(func() { close(w.release) }) // before start's cleanup: mochi's goroutines end
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []byte
	out = (&packet.Connect{ClientID: "wedged", CleanStart: true}).AppendTo(out)
	out = append(out, 0xC0, 0x00) // PINGREQ: processed after CONNACK, where the hook blocks
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the client's PINGREQ never reached mochi")
	}
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrCloseAbandoned) {
			t.Errorf("Close: %v, want ErrCloseAbandoned", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for ever for a wedged mochi")
	}
	if n := b.AbandonedCloses(); n != 1 {
		t.Errorf("AbandonedCloses = %d, want 1", n)
	}
}

// Close while clients are leaving: mochi's own way to say goodbye (Clients.GetByListener)
// takes the clients map's read lock twice, so a client leaving in between (Clients.Delete,
// write lock) deadlocked both ("mochi behaviours met" 9 in cmd/tern/README.md). The window
// is a few instructions wide, so the race is run many times.
func TestCloseWhileClientsLeave(t *testing.T) {
	const rounds, clients = 150, 16
	for r := range rounds {
		b, err := Start("127.0.0.1:0", Options{AbandonAfter: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		conns := make([]net.Conn, clients)
		for i := range conns {
			c, err := net.Dial("tcp", b.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			id := "leaver-" + string(rune('a'+i))
			if _, err := c.Write((&packet.Connect{ClientID: id, CleanStart: true}).AppendTo(nil)); err != nil {
				t.Fatal(err)
			}
			conns[i] = c
		}
		for _, c := range conns { // each CONNACK: every client is attached
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := packet.NewReader(c, 256).ReadFrame(); err != nil {
				t.Fatalf("round %d: no CONNACK: %v", r, err)
			}
		}
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() { c.Close() })
		}
		err = b.Close()
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: Close: %v", r, err)
		}
	}
}
