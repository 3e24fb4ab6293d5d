package tern

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// The keepalive timer pings when either direction is quiet, not only when both are (the
// keepalive invariant of docs/DESIGN.md).

// Reads quiet, writes busy: the client publishes steadily and the broker sends nothing; the
// client still pings within the keepalive, or a dead broker would go unnoticed.
func TestKeepAliveTimerPingsWhenReadsQuiet(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, WithKeepAlive(2*time.Second))
	since := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the workload: a QoS 0 message every 20 ms
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if c.Publish(ctx, PublishOptions{Topic: "ka/w", Payload: []byte("x")}) != nil {
					return
				}
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	// Keepalive plus one second of slack for a loaded machine.
	for {
		if d := time.Since(since); d > 3*time.Second {
			t.Fatalf("no PINGREQ %v after the last packet from the broker, keepalive 2s", d)
		}
		if _, ok := pc.read().(*packet.Pingreq); ok {
			break
		}
	}
}

// Writes quiet, reads busy: the broker sends steadily and the client has nothing to send; it
// pings within the keepalive all the same ([MQTT-3.1.2-20]: without other packets to send,
// the client sends PINGREQ).
func TestKeepAliveTimerPingsWhenWritesQuiet(t *testing.T) {
	p := newPeer(t)
	_, pc, _ := connectPeer(t, p, &packet.Connack{}, WithKeepAlive(2*time.Second))
	since := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the workload: an unrouted QoS 0 message every 20 ms (the client answers nothing)
		defer wg.Done()
		msg := (&packet.Publish{Topic: "ka/r", Payload: []byte("x")}).AppendTo(nil)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := pc.nc.Write(msg); err != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	if _, ok := pc.read().(*packet.Pingreq); !ok {
		t.Fatal("expected PINGREQ as the client's first packet after CONNECT")
	}
	if d := time.Since(since); d > 3*time.Second {
		t.Fatalf("PINGREQ %v after CONNECT, keepalive 2s", d)
	}
}
