package tern

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// Disconnect shuts down the client's sending side after the DISCONNECT and returns once the
// broker has closed its side: the broker then has read everything the client sent, so the
// session's next connection is not sent again what was acknowledged (the Mosquitto case is
// TestV311OversizedQueuedMessageMosquitto). Here the peer sees the end of the stream while
// Disconnect still waits, and Disconnect returns once the peer closes.
func TestDisconnectWaitsForBrokerClose(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	done := make(chan error, 1)
	go func() { done <- c.Disconnect(testCtx(t)) }()
	if _, ok := pc.read().(*packet.Disconnect); !ok {
		t.Fatal("first packet is not DISCONNECT")
	}
	if _, err := pc.tryRead(10 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("after DISCONNECT the peer read %v, want the end of the stream", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Disconnect returned (%v) before the broker closed", err)
	default:
	}
	pc.nc.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := c.Stats().ConnectionLost; n != 0 {
		t.Fatalf("a graceful Disconnect counted as a lost connection (%d)", n)
	}
}

// A broker that never closes after DISCONNECT cannot hold Disconnect: it waits a bounded
// time (at most a second, or ctx) and closes.
func TestDisconnectBrokerNeverCloses(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Disconnect(ctx) }()
	if _, ok := pc.read().(*packet.Disconnect); !ok {
		t.Fatal("first packet is not DISCONNECT")
	}
	// The peer keeps its side open and reads nothing more.
	if err := <-done; err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if _, err := pc.tryRead(10 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("after Disconnect returned the peer read %v, want the end of the stream", err)
	}
}
