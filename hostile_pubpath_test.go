package tern

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// Hostile or broken brokers on the publish path: identifiers, late answers, early releases
// and a peer that stops reading.

// drainPeer reads every packet pc receives until the connection ends, counting PUBLISH
// packets and handing SUBSCRIBE packets to subs. wait returns once the reader has stopped.
func drainPeer(pc *peerConn, subs chan<- *packet.Subscribe) (published func() int, wait func()) {
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := pc.r.ReadFrame()
			if err != nil {
				return
			}
			switch f.Type() {
			case packet.PUBLISH:
				mu.Lock()
				n++
				mu.Unlock()
			case packet.SUBSCRIBE:
				var s packet.Subscribe
				if s.Decode(f.Flags(), f.Body) == nil {
					subs <- &s
				}
			}
			f.Release()
		}
	}()
	return func() int { mu.Lock(); defer mu.Unlock(); return n }, func() { pc.nc.Close(); <-done }
}

// [MQTT-2.2.1-3] A packet identifier stays in use until its exchange ends, so with all 65,535
// in use (a broker that omits Receive Maximum and never acknowledges) a caller needing one
// waits, bounded by its ctx, without holding the session lock, and goes on as soon as one is
// freed.
func TestPacketIDsExhausted(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}) // no Receive Maximum: 65,535
	subs := make(chan *packet.Subscribe, 4)
	published, stop := drainPeer(pc, subs)
	defer stop()
	ctx := testCtx(t)

	pending := make(chan error, 1)
	go func() { _, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "a"}}); pending <- err }()
	var first *packet.Subscribe
	select {
	case first = <-subs:
	case <-ctx.Done():
		t.Fatal("no SUBSCRIBE")
	}
	for i := range 65534 {
		if _, err := c.PublishAsync(ctx, PublishOptions{Topic: "x", QoS: 1}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	waitFor(t, func() bool { return published() == 65534 })

	short := func() context.Context {
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	returned := make(chan error, 2)
	go func() { _, err := c.PublishAsync(short(), PublishOptions{Topic: "x", QoS: 1}); returned <- err }()
	go func() { _, _, err := c.Subscribe(short(), []TopicFilter{{Topic: "b"}}); returned <- err }()
	for range 2 {
		select {
		case err := <-returned:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("with every identifier in use: %v, want the ctx's deadline", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a caller waiting for a packet identifier ignored its ctx")
		}
	}
	c.mu.Lock()
	inUse := c.inUse
	c.mu.Unlock()
	if inUse != 65534 {
		t.Fatalf("window places in use %d, want 65534: a publish that gave up kept its place", inUse)
	}

	// A waiting publish goes on when an identifier is freed, and takes that one.
	later := make(chan error, 1)
	go func() { _, err := c.PublishAsync(ctx, PublishOptions{Topic: "x", QoS: 1}); later <- err }()
	pc.send(&packet.Suback{PacketID: first.PacketID, ReasonCodes: []packet.ReasonCode{0}})
	if err := <-pending; err != nil {
		t.Fatal(err)
	}
	if err := <-later; err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return published() == 65535 })
	c.mu.Lock()
	om := c.inflight[first.PacketID]
	c.mu.Unlock()
	if om == nil {
		t.Fatalf("the freed identifier %d was not the one reused", first.PacketID)
	}
}

// A cancelled SUBSCRIBE keeps its packet identifier until its answer arrives or its
// connection ends, so a late SUBACK can never answer a newer request.
// Rule: an answer belongs to the request that carried its identifier ([MQTT-2.2.1-6]).
func TestCancelledRequestKeepsID(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, append(fastOpts, WithClientID("late"))...)
	ctx := testCtx(t)
	cctx, cancel := context.WithCancel(ctx)
	old := make(chan error, 1)
	go func() { _, _, err := c.Subscribe(cctx, []TopicFilter{{Topic: "old"}}); old <- err }()
	sp, ok := pc.read().(*packet.Subscribe)
	if !ok {
		t.Fatal("expected SUBSCRIBE")
	}
	cancel()
	if err := <-old; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled subscribe: %v", err)
	}
	// As after 65,535 allocations: the allocator's next candidate is the cancelled one's.
	c.mu.Lock()
	c.nextID = sp.PacketID - 1
	c.mu.Unlock()

	type result struct {
		s   *Subscription
		err error
	}
	newer := make(chan result, 1)
	go func() {
		_, s, err := c.Subscribe(ctx, []TopicFilter{{Topic: "new", QoS: 1}})
		newer <- result{s, err}
	}()
	sp2, ok := pc.read().(*packet.Subscribe)
	if !ok {
		t.Fatal("expected SUBSCRIBE")
	}
	if sp2.PacketID == sp.PacketID {
		t.Errorf("identifier %d reused while its SUBACK may still come", sp.PacketID)
	}
	// The late answer to the cancelled request, then the answer to the new one.
	pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{packet.NotAuthorized}})
	pc.send(&packet.Suback{PacketID: sp2.PacketID, ReasonCodes: []packet.ReasonCode{1}})
	r := <-newer
	if r.err != nil || r.s.Results()[0].GrantedQoS != 1 {
		t.Fatalf("the new subscribe got another request's answer: %v", r.err)
	}
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.requests) == 0 })

	// One cancelled while its connection ends: freed with the connection, never resent.
	cctx, cancel = context.WithCancel(ctx)
	go func() { _, _, err := c.Subscribe(cctx, []TopicFilter{{Topic: "gone"}}); old <- err }()
	if _, ok := pc.read().(*packet.Subscribe); !ok {
		t.Fatal("expected SUBSCRIBE")
	}
	cancel()
	<-old
	c.mu.Lock()
	held := len(c.requests)
	c.mu.Unlock()
	if held != 1 {
		t.Fatalf("%d requests held after the cancel, want 1 until the answer or the connection's end", held)
	}
	pc.nc.Close()
	pc2, _ := p.handshake(&packet.Connack{SessionPresent: true})
	waitFor(t, c.Connected)
	if !pc2.quiet(200 * time.Millisecond) {
		t.Fatal("a cancelled request was resent")
	}
	c.mu.Lock()
	held = len(c.requests)
	c.mu.Unlock()
	if held != 0 {
		t.Fatalf("%d requests held after their connection ended", held)
	}
}

// [MQTT-4.3.3] The broker may send PUBREL only after the client's PUBREC. One that releases
// a QoS 2 message early gets PUBCOMP, and the inbound window still counts the message until
// the application acknowledges it, exactly once: with WithStrictReceiveMaximum, the
// Receive Maximum is enforced at the right count afterwards, and no PUBREC follows the
// completed exchange.
func TestEarlyPubrelKeepsInboundWindow(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, WithReceiveMaximum(2), WithStrictReceiveMaximum(true))
	msgs, _, err := subscribeVia(t, c, pc, "w/#", 2)
	if err != nil {
		t.Fatal(err)
	}
	pc.send(&packet.Publish{Topic: "w/1", QoS: 2, PacketID: 1, Payload: []byte("1")})
	m1 := recv(t, msgs)
	pc.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 1}) // before any PUBREC
	if a, ok := pc.read().(*packet.Ack); !ok || a.Kind != packet.PUBCOMP || a.PacketID != 1 {
		t.Fatalf("expected PUBCOMP 1, got %+v", a)
	}
	m1.Ack()
	c.mu.Lock()
	count := c.inCount
	c.mu.Unlock()
	if count != 0 {
		t.Fatalf("inbound window count %d after every message was acknowledged, want 0", count)
	}
	// Two unacknowledged messages fill the window of 2; the third overruns it.
	for id := uint16(2); id <= 4; id++ {
		pc.send(&packet.Publish{Topic: "w/n", QoS: 1, PacketID: id, Payload: []byte("n")})
	}
	for {
		switch a := pc.read().(type) {
		case *packet.Ack:
			t.Fatalf("unexpected %v %d: the exchange was complete, or the message unacknowledged", a.Kind, a.PacketID)
		case *packet.Disconnect:
			if a.ReasonCode != packet.ReceiveMaximumExceeded {
				t.Fatalf("DISCONNECT %v, want Receive Maximum exceeded", a.ReasonCode)
			}
			return
		}
	}
}

// A broker that stops reading while provoking acknowledgements (here PUBREL for unknown
// identifiers, each answered by PUBCOMP) cannot make the client's memory grow without bound:
// once the waiting acknowledgements pass the bound, the connection is closed with
// ErrWriteQueueFull.
// Promise: bounded memory against a hostile broker.
func TestUnreadAcknowledgementsBounded(t *testing.T) {
	p := newPeer(t)
	down := make(chan error, 1)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, WithWriteBuffer(1024),
		WithOnConnectionDown(func(err error) bool { down <- err; return false }))
	var blob []byte
	for i := 0; len(blob) < 8<<20; i++ {
		blob = (&packet.Ack{Kind: packet.PUBREL, PacketID: uint16(i%65535 + 1)}).AppendTo(blob)
	}
	wrote := make(chan struct{})
	go func() { defer close(wrote); pc.nc.Write(blob) }() // ends when the client closes
	select {
	case err := <-down:
		if !errors.Is(err, ErrWriteQueueFull) {
			t.Fatalf("connection closed by %v, want ErrWriteQueueFull", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the client kept queueing acknowledgements for a peer that does not read")
	}
	<-wrote
	_ = c
}
