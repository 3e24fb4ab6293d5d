package tern

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// connectLater starts Connect of c against p in the background and completes the handshake
// with ca; it returns the broker side once Connect has returned.
func connectLater(t *testing.T, c *Client, p *peer, ca *packet.Connack) *peerConn {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc, _ := p.handshake(ca)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return pc
}

func newPeerClient(t *testing.T, p *peer, opts ...Option) *Client {
	t.Helper()
	c, err := New(append([]Option{WithBroker(p.url()), WithStats(),
		WithReconnectBackoff(ConstantBackoff(time.Hour))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

// All three forms may subscribe before Connect without waiting; the SUBSCRIBEs go out with
// the first connection, messages the broker sends before any SUBACK reach them, and the
// per-filter answers are observable through Wait and Results.
func TestSubscribeBeforeConnectAllForms(t *testing.T) {
	p := newPeer(t)
	c := newPeerClient(t, p)
	ctx := testCtx(t)
	ch, s1, err := c.Subscribe(ctx, []TopicFilter{{Topic: "pre/ch", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	q, s2, err := c.SubscribeQueue(ctx, []TopicFilter{{Topic: "pre/q", QoS: 1}, {Topic: "pre/denied", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	cb := make(chan string, 1)
	s3, err := c.SubscribeCallback(ctx, []TopicFilter{{Topic: "pre/cb", QoS: 1}}, func(m *Message) { cb <- string(m.Payload) })
	if err != nil {
		t.Fatal(err)
	}
	if s1.Results() != nil {
		t.Fatal("results before the broker answered")
	}
	pc := connectLater(t, c, p, &packet.Connack{SessionPresent: true})
	// A resumed session delivers before the SUBACKs.
	pc.send(&packet.Publish{Topic: "pre/ch", QoS: 1, PacketID: 1, Payload: []byte("a")})
	pc.send(&packet.Publish{Topic: "pre/q", QoS: 1, PacketID: 2, Payload: []byte("b")})
	pc.send(&packet.Publish{Topic: "pre/cb", QoS: 1, PacketID: 3, Payload: []byte("c")})
	if m := recv(t, ch); string(m.Payload) != "a" {
		t.Fatalf("channel got %q", m.Payload)
	}
	if m, ok := q.Pop(ctx); !ok || string(m.Payload) != "b" {
		t.Fatalf("queue got %v %v", ok, m)
	}
	select {
	case got := <-cb:
		if got != "c" {
			t.Fatalf("callback got %q", got)
		}
	case <-ctx.Done():
		t.Fatal("callback not called")
	}
	// Three SUBSCRIBEs (among the acknowledgements), answered in turn.
	subs := map[string]*packet.Subscribe{}
	for len(subs) < 3 {
		if sp, ok := pc.read().(*packet.Subscribe); ok {
			subs[sp.Subscriptions[0].Filter] = sp
		}
	}
	pc.send(&packet.Suback{PacketID: subs["pre/ch"].PacketID, ReasonCodes: []packet.ReasonCode{1}})
	pc.send(&packet.Suback{PacketID: subs["pre/q"].PacketID, ReasonCodes: []packet.ReasonCode{1, packet.NotAuthorized}})
	pc.send(&packet.Suback{PacketID: subs["pre/cb"].PacketID, ReasonCodes: []packet.ReasonCode{packet.NotAuthorized}})
	if err := s1.Wait(ctx); err != nil {
		t.Fatalf("channel form: %v", err)
	}
	if r := s1.Results(); len(r) != 1 || r[0].Err != nil || r[0].GrantedQoS != 1 {
		t.Fatalf("channel form results %+v", r)
	}
	var se *SubscribeError
	if err := s2.Wait(ctx); !errors.As(err, &se) {
		t.Fatalf("queue form: %v, want a SubscribeError", err)
	}
	var rc *ReasonCodeError
	if r := s2.Results(); r[0].Err != nil || !errors.As(r[1].Err, &rc) || rc.Code != packet.NotAuthorized {
		t.Fatalf("queue form results %+v", r)
	}
	if err := s3.Wait(ctx); !errors.As(err, &se) {
		t.Fatalf("callback form: %v, want a SubscribeError", err)
	}
	// The refused filter no longer routes; the granted one does.
	pc.send(&packet.Publish{Topic: "pre/denied", QoS: 0, Payload: []byte("x")})
	pc.send(&packet.Publish{Topic: "pre/q", QoS: 0, Payload: []byte("y")})
	if m, ok := q.Pop(ctx); !ok || string(m.Payload) != "y" {
		t.Fatalf("queue got %v %v, want y", ok, m)
	}
	waitFor(t, func() bool { return c.Stats().Unrouted == 1 })
}

// A subscription made before Connect is checked against the first CONNACK: what the broker
// says it does not support fails the subscription (Wait) instead of being sent, and an
// identifier Tern picked itself is left out for a broker that takes none.
func TestSubscribeBeforeConnectCheckedAgainstConnack(t *testing.T) {
	p := newPeer(t)
	c := newPeerClient(t, p)
	ctx := testCtx(t)
	ch, plain, err := c.Subscribe(ctx, []TopicFilter{{Topic: "plain", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	_, shared, err := c.Subscribe(ctx, []TopicFilter{{Topic: "$share/g/t", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	no := false
	pc := connectLater(t, c, p, &packet.Connack{SharedSubAvailable: &no, SubIDAvailable: &no})
	if err := shared.Wait(ctx); !errors.Is(err, ErrSharedNotSupported) {
		t.Fatalf("shared: %v, want ErrSharedNotSupported", err)
	}
	sp := pc.read().(*packet.Subscribe)
	if sp.Subscriptions[0].Filter != "plain" || sp.SubscriptionID != 0 {
		t.Fatalf("sent %q with identifier %d, want plain without one", sp.Subscriptions[0].Filter, sp.SubscriptionID)
	}
	pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1}})
	if err := plain.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if !pc.quiet(100 * time.Millisecond) {
		t.Fatal("the refused shared subscription was sent")
	}
	pc.send(&packet.Publish{Topic: "plain", Payload: []byte("p")})
	if m := recv(t, ch); string(m.Payload) != "p" {
		t.Fatalf("got %q", m.Payload)
	}
}

// Unsubscribe before Connect ends the subscription without sending anything; Disconnect
// before Connect ends the others.
func TestSubscribeBeforeConnectEnded(t *testing.T) {
	p := newPeer(t)
	c := newPeerClient(t, p)
	ctx := testCtx(t)
	_, gone, err := c.Subscribe(ctx, []TopicFilter{{Topic: "gone", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := gone.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := gone.Wait(ctx); !errors.Is(err, ErrUnsubscribed) {
		t.Fatalf("Wait after Unsubscribe: %v", err)
	}
	ch, kept, err := c.Subscribe(ctx, []TopicFilter{{Topic: "kept", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SubscribeCallback(ctx, []TopicFilter{{Topic: "cb", QoS: 1}}, func(*Message) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := kept.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Disconnect: %v", err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel still open after Disconnect")
	}
	// The callback goroutine has ended too (TestMain's leak check).
}

// A resumed session delivers messages tagged with the subscription identifiers of an
// earlier process; an identifier that names a subscription whose filters do not match the
// topic must not route the message there.
func TestForeignSubscriptionIDRoutesByTopic(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	chA, sA, err := subscribeVia(t, c, pc, "topic/a", 0)
	if err != nil {
		t.Fatal(err)
	}
	chB, _, err := subscribeVia(t, c, pc, "topic/b", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The identifier of A, on a message for B's topic.
	pc.send(&packet.Publish{Topic: "topic/b", Payload: []byte("for b"), SubscriptionIDs: []uint32{sA.id}})
	if m := recv(t, chB); string(m.Payload) != "for b" {
		t.Fatalf("B got %q", m.Payload)
	}
	expectNone(t, chA, 50*time.Millisecond)
}
