package tern

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// fastOpts reconnects at once so the tests wait on events, not on backoff.
var fastOpts = []Option{WithReconnectBackoff(ConstantBackoff(time.Millisecond))}

// publishAsync starts a publish and returns its outcome channel.
func publishAsync(t *testing.T, c *Client, m PublishOptions) chan error {
	errc := make(chan error, 1)
	go func() { errc <- c.Publish(testCtx(t), m) }()
	return errc
}

func readPublish(t *testing.T, pc *peerConn) *packet.Publish {
	t.Helper()
	for {
		switch p := pc.read().(type) {
		case *packet.Publish:
			return p
		case *packet.Pingreq:
		default:
			t.Fatalf("expected PUBLISH, got %T %+v", p, p)
		}
	}
}

// With the session resumed, unacknowledged publishes are resent in order with DUP, and a
// QoS 2 message past PUBREC continues with PUBREL; the callers stay blocked until the end.
func TestResumeResendsInOrder(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, fastOpts...)
	r1 := publishAsync(t, c, PublishOptions{Topic: "r", QoS: 1, Payload: []byte("a")})
	first := readPublish(t, pc)
	r2 := publishAsync(t, c, PublishOptions{Topic: "r", QoS: 2, Payload: []byte("b")})
	second := readPublish(t, pc)
	r3 := publishAsync(t, c, PublishOptions{Topic: "r", QoS: 2, Payload: []byte("c"), MessageExpiry: 100 * time.Second})
	third := readPublish(t, pc)
	pc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: second.PacketID})
	if a := pc.read().(*packet.Ack); a.Kind != packet.PUBREL || a.PacketID != second.PacketID {
		t.Fatalf("got %v %d, want PUBREL", a.Kind, a.PacketID)
	}
	pc.nc.Close() // the cut

	pc2, cp := p.handshake(&packet.Connack{SessionPresent: true})
	if cp.CleanStart {
		t.Fatal("reconnect asked for a clean start")
	}
	got := readPublish(t, pc2)
	if got.PacketID != first.PacketID || !got.Dup || string(got.Payload) != "a" {
		t.Fatalf("first resend %+v, want DUP copy of %d", got, first.PacketID)
	}
	if a := pc2.read().(*packet.Ack); a.Kind != packet.PUBREL || a.PacketID != second.PacketID {
		t.Fatalf("got %v %d, want PUBREL %d", a.Kind, a.PacketID, second.PacketID)
	}
	got3 := readPublish(t, pc2)
	if got3.PacketID != third.PacketID || !got3.Dup || got3.MessageExpiry == 0 || got3.MessageExpiry > 100 {
		t.Fatalf("third resend %+v", got3)
	}
	for _, r := range []chan error{r1, r2, r3} {
		select {
		case err := <-r:
			t.Fatalf("a publish returned before its acknowledgement: %v", err)
		default:
		}
	}
	pc2.send(&packet.Ack{Kind: packet.PUBACK, PacketID: first.PacketID})
	pc2.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: second.PacketID})
	pc2.send(&packet.Ack{Kind: packet.PUBREC, PacketID: third.PacketID})
	pc2.read() // PUBREL
	pc2.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: third.PacketID})
	for i, r := range []chan error{r1, r2, r3} {
		if err := <-r; err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func TestSessionLossRepublishes(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, fastOpts...)
	ch, _, err := subscribeVia(t, c, pc, "loss/#", 1)
	if err != nil {
		t.Fatal(err)
	}
	r := publishAsync(t, c, PublishOptions{Topic: "loss/x", QoS: 1, Payload: []byte("again")})
	readPublish(t, pc)
	pc.nc.Close()

	pc2, _ := p.handshake(&packet.Connack{SessionPresent: false})
	// Both the resubscription and the republished message arrive, in either order.
	var sawSub, sawPub bool
	for !sawSub || !sawPub {
		switch x := pc2.read().(type) {
		case *packet.Subscribe:
			if x.Subscriptions[0].Filter != "loss/#" {
				t.Fatalf("resubscribed %q", x.Subscriptions[0].Filter)
			}
			pc2.send(&packet.Suback{PacketID: x.PacketID, ReasonCodes: []packet.ReasonCode{1}})
			sawSub = true
		case *packet.Publish:
			if x.Dup || string(x.Payload) != "again" {
				t.Fatalf("republished %+v, want a new message (DUP clear)", x)
			}
			pc2.send(&packet.Ack{Kind: packet.PUBACK, PacketID: x.PacketID})
			sawPub = true
		}
	}
	if err := <-r; err != nil {
		t.Fatal(err)
	}
	// The subscription still delivers through the same channel.
	pc2.send(&packet.Publish{Topic: "loss/y", Payload: []byte("still here")})
	if m := recv(t, ch); string(m.Payload) != "still here" {
		t.Fatalf("got %q", m.Payload)
	}
}

func TestSessionLossFailPending(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, append(fastOpts, WithSessionLossPolicy(FailPending))...)
	r := publishAsync(t, c, PublishOptions{Topic: "f", QoS: 1})
	readPublish(t, pc)
	pc.nc.Close()
	p.handshake(&packet.Connack{SessionPresent: false})
	if err := <-r; !errors.Is(err, ErrSessionLost) {
		t.Fatalf("got %v, want ErrSessionLost", err)
	}
}

// A message whose expiry passes while the client is cut off completes with ErrMessageExpired
// and is not sent again.
func TestMessageExpiresWhileDisconnected(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, fastOpts...)
	r := publishAsync(t, c, PublishOptions{Topic: "e", QoS: 1, MessageExpiry: time.Second})
	readPublish(t, pc)
	pc.nc.Close()
	pc2 := p.accept()
	pc2.read()                          // CONNECT: the answer waits until the message's lifetime is over
	time.Sleep(1100 * time.Millisecond) // the behaviour under test is the passing of time
	pc2.send(&packet.Connack{SessionPresent: true})
	if err := <-r; !errors.Is(err, ErrMessageExpired) {
		t.Fatalf("got %v, want ErrMessageExpired", err)
	}
	if !pc2.quiet(150 * time.Millisecond) {
		t.Fatal("an expired message was sent again")
	}
}

// CONNACK 0x9C with a Server Reference sends the client to the other server.
func TestRedirectOnConnack(t *testing.T) {
	a, b := newPeer(t), newPeer(t)
	c, err := New(WithBroker(a.url()))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	a.handshake(&packet.Connack{ReasonCode: packet.UseAnotherServer, ServerReference: b.ln.Addr().String()})
	b.handshake(&packet.Connack{})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	if got := c.Info().Broker; got != b.url() {
		t.Fatalf("connected to %s, want %s", got, b.url())
	}
}

// DISCONNECT 0x9D (server moved) with a Server Reference: the next connection goes there.
func TestRedirectOnDisconnect(t *testing.T) {
	a, b := newPeer(t), newPeer(t)
	c, pc, _ := connectPeer(t, a, &packet.Connack{}, fastOpts...)
	pc.send(&packet.Disconnect{ReasonCode: packet.ServerMoved, ServerReference: "mqtt://" + b.ln.Addr().String()})
	b.handshake(&packet.Connack{})
	waitFor(t, func() bool { return c.Connected() && c.Info().Broker == b.url() })
}

func TestSetBrokersAtRuntime(t *testing.T) {
	a, b := newPeer(t), newPeer(t)
	c, pc, _ := connectPeer(t, a, &packet.Connack{}, fastOpts...)
	if err := c.SetBrokers("bad://x"); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("SetBrokers accepted a bad URL: %v", err)
	}
	if err := c.SetBrokers(b.url()); err != nil {
		t.Fatal(err)
	}
	if !c.Connected() || c.Info().Broker != a.url() {
		t.Fatal("SetBrokers dropped the live connection")
	}
	pc.nc.Close()
	b.handshake(&packet.Connack{})
	waitFor(t, func() bool { return c.Connected() && c.Info().Broker == b.url() })
}

// With WithBackgroundConnect, Connect returns at once; Publish waits for the connection.
func TestBackgroundConnect(t *testing.T) {
	p := newPeer(t)
	var mu sync.Mutex
	var attempts []int
	c, err := New(append(fastOpts, WithBroker(p.url()), WithBackgroundConnect(),
		WithOnReconnectAttempt(func(n int, _ string) { mu.Lock(); attempts = append(attempts, n); mu.Unlock() }))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	r := publishAsync(t, c, PublishOptions{Topic: "bg", QoS: 1, Payload: []byte("early")})
	pc, _ := p.handshake(&packet.Connack{})
	pub := readPublish(t, pc)
	pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
	if err := <-r; err != nil || string(pub.Payload) != "early" {
		t.Fatalf("publish before the first connection: %v %q", err, pub.Payload)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) == 0 || attempts[0] != 1 {
		t.Fatalf("reconnect attempts %v", attempts)
	}
}

// A session kept in a Store survives the client: a new client loads it, resends the
// publish with DUP and continues the QoS 2 exchange with PUBREL.
func TestStoreRestoresSession(t *testing.T) {
	p := newPeer(t)
	store := NewMemoryStore()
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, append(fastOpts, WithStore(store), WithClientID("st"))...)
	publishAsync(t, c, PublishOptions{Topic: "s", QoS: 1, Payload: []byte("one")})
	one := readPublish(t, pc)
	publishAsync(t, c, PublishOptions{Topic: "s", QoS: 2, Payload: []byte("two")})
	two := readPublish(t, pc)
	pc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: two.PacketID})
	pc.read() // PUBREL: stored as released before it left
	// The process "dies" here: take what the store holds now.
	recs, _ := store.Load()
	crashed := NewMemoryStore()
	for _, r := range recs {
		crashed.Put(r)
	}
	if len(recs) != 2 || recs[0].Kind != RecordPublish || recs[1].Kind != RecordReleased {
		t.Fatalf("stored %+v", recs)
	}

	p2 := newPeer(t)
	c2, pc2, cp := connectPeer(t, p2, &packet.Connack{SessionPresent: true}, append(fastOpts, WithStore(crashed), WithClientID("st"))...)
	_ = c2
	if cp.ClientID != "st" {
		t.Fatalf("client id %q", cp.ClientID)
	}
	got := readPublish(t, pc2)
	if got.PacketID != one.PacketID || !got.Dup || string(got.Payload) != "one" {
		t.Fatalf("restored publish %+v", got)
	}
	if a := pc2.read().(*packet.Ack); a.Kind != packet.PUBREL || a.PacketID != two.PacketID {
		t.Fatalf("got %v %d, want PUBREL %d", a.Kind, a.PacketID, two.PacketID)
	}
	pc2.send(&packet.Ack{Kind: packet.PUBACK, PacketID: one.PacketID})
	pc2.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: two.PacketID})
	waitFor(t, func() bool { r, _ := crashed.Load(); return len(r) == 0 })
}

// An inbound QoS 2 message recorded in the Store is not delivered again after a restart.
func TestStoreRemembersInboundQoS2(t *testing.T) {
	store := NewMemoryStore()
	store.Put(StoreRecord{Kind: RecordInbound, ID: 5})
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{SessionPresent: true}, append(fastOpts, WithStore(store), WithClientID("in"))...)
	ch, _, err := subscribeVia(t, c, pc, "in", 2)
	if err != nil {
		t.Fatal(err)
	}
	pc.send(&packet.Publish{Topic: "in", QoS: 2, PacketID: 5, Dup: true, Payload: []byte("old")})
	if a := pc.read().(*packet.Ack); a.Kind != packet.PUBREC || a.PacketID != 5 {
		t.Fatalf("got %v %d", a.Kind, a.PacketID)
	}
	pc.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 5})
	if a := pc.read().(*packet.Ack); a.Kind != packet.PUBCOMP {
		t.Fatalf("got %v", a.Kind)
	}
	select {
	case m := <-ch:
		t.Fatalf("delivered again: %q", m.Payload)
	default:
	}
	if r, _ := store.Load(); len(r) != 0 {
		t.Fatalf("store still holds %+v", r)
	}
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// PUBCOMP "identifier not found" for a resent PUBREL reports an exchange the broker already
// finished: success. PUBREC "identifier in use" for a resent PUBLISH is still a refusal (a
// broker may answer so without holding the message).
func TestQoS2RecoveryAnswersAreSuccess(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, fastOpts...)
	r1 := publishAsync(t, c, PublishOptions{Topic: "rec", QoS: 2, Payload: []byte("one")})
	one := readPublish(t, pc)
	r2 := publishAsync(t, c, PublishOptions{Topic: "rec", QoS: 2, Payload: []byte("two")})
	two := readPublish(t, pc)
	pc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: two.PacketID})
	pc.read() // PUBREL
	pc.nc.Close()

	pc2, _ := p.handshake(&packet.Connack{SessionPresent: true})
	if got := readPublish(t, pc2); got.PacketID != one.PacketID || !got.Dup {
		t.Fatalf("resend %+v", got)
	}
	if a := pc2.read().(*packet.Ack); a.Kind != packet.PUBREL || a.PacketID != two.PacketID {
		t.Fatalf("got %v %d", a.Kind, a.PacketID)
	}
	pc2.send(&packet.Ack{Kind: packet.PUBREC, PacketID: one.PacketID, ReasonCode: packet.PacketIdentifierInUse})
	var rc *ReasonCodeError
	if err := <-r1; !errors.As(err, &rc) || rc.Code != packet.PacketIdentifierInUse {
		t.Fatalf("resend answered with 0x91: %v, want the refusal", err)
	}
	pc2.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: two.PacketID, ReasonCode: packet.PacketIdentifierNotFound})
	if err := <-r2; err != nil {
		t.Fatalf("PUBCOMP 0x92 to a resent PUBREL: %v", err)
	}
}
