package tern

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// The broker's acknowledgements must follow arrival order whatever order the application
// acknowledges in (MQTT 5 §4.6).
func TestAcksInArrivalOrder(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ctx := testCtx(t)
	ch, _, err := subscribeVia(t, c, pc, "order/#", 1)
	if err != nil {
		t.Fatal(err)
	}
	for id := uint16(1); id <= 3; id++ {
		pc.send(&packet.Publish{Topic: "order/x", QoS: 1, PacketID: id, Payload: []byte{byte(id)}})
	}
	var msgs []*Message
	for range 3 {
		msgs = append(msgs, recv(t, ch))
	}
	_ = ctx
	msgs[2].Ack() // the third: nothing may be sent yet
	msgs[2].Ack() // idempotent
	if !pc.quiet(200 * time.Millisecond) {
		t.Fatal("an acknowledgement was sent before the first message was acknowledged")
	}
	msgs[0].Ack()
	if a := pc.read().(*packet.Ack); a.Kind != packet.PUBACK || a.PacketID != 1 {
		t.Fatalf("got %v %d, want PUBACK 1", a.Kind, a.PacketID)
	}
	if !pc.quiet(100 * time.Millisecond) {
		t.Fatal("PUBACK 3 sent before PUBACK 2")
	}
	msgs[1].Ack()
	for _, want := range []uint16{2, 3} {
		if a := pc.read().(*packet.Ack); a.Kind != packet.PUBACK || a.PacketID != want {
			t.Fatalf("got %v %d, want PUBACK %d", a.Kind, a.PacketID, want)
		}
	}
}

// subscribeVia subscribes through the scripted peer, answering SUBACK with granted QoS.
func subscribeVia(t *testing.T, c *Client, pc *peerConn, filter string, qos byte, opts ...SubOption) (<-chan *Message, *Subscription, error) {
	t.Helper()
	type result struct {
		ch  <-chan *Message
		s   *Subscription
		err error
	}
	done := make(chan result, 1)
	go func() {
		ch, s, err := c.Subscribe(testCtx(t), []TopicFilter{{Topic: filter, QoS: qos}}, opts...)
		done <- result{ch, s, err}
	}()
	sp, ok := pc.read().(*packet.Subscribe)
	if !ok {
		t.Fatal("expected SUBSCRIBE")
	}
	pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{packet.ReasonCode(qos)}})
	r := <-done
	return r.ch, r.s, r.err
}

// Overlapping subscriptions each get their own message; the broker gets one PUBACK, after
// the last of them acknowledges.
func TestOverlappingSubscriptionsOneAck(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ch1, _, err := subscribeVia(t, c, pc, "a/#", 1)
	if err != nil {
		t.Fatal(err)
	}
	ch2, _, err := subscribeVia(t, c, pc, "a/+", 1)
	if err != nil {
		t.Fatal(err)
	}
	pc.send(&packet.Publish{Topic: "a/b", QoS: 1, PacketID: 7, Payload: []byte("x")})
	m1, m2 := recv(t, ch1), recv(t, ch2)
	if m1 == m2 {
		t.Fatal("both subscriptions got the same handle")
	}
	m1.Ack()
	if !pc.quiet(150 * time.Millisecond) {
		t.Fatal("PUBACK sent before every subscription acknowledged")
	}
	m2.Ack()
	if a := pc.read().(*packet.Ack); a.Kind != packet.PUBACK || a.PacketID != 7 {
		t.Fatalf("got %v %d", a.Kind, a.PacketID)
	}
}

// A QoS 2 message resent by the broker before the application acknowledged it is never
// delivered twice; PUBREC follows the application's Ack, PUBCOMP follows PUBREL.
func TestInboundQoS2ExactlyOnce(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ch, _, err := subscribeVia(t, c, pc, "q2", 2)
	if err != nil {
		t.Fatal(err)
	}
	pub := &packet.Publish{Topic: "q2", QoS: 2, PacketID: 9, Payload: []byte("once")}
	pc.send(pub)
	m := recv(t, ch)
	dup := *pub
	dup.Dup = true
	pc.send(&dup)
	m.Ack()
	if a := pc.read().(*packet.Ack); a.Kind != packet.PUBREC || a.PacketID != 9 {
		t.Fatalf("got %v %d, want PUBREC 9", a.Kind, a.PacketID)
	}
	pc.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 9})
	// The resend may be handled after the Ack, and is then answered with PUBREC again.
	for {
		a := pc.read().(*packet.Ack)
		if a.PacketID != 9 || (a.Kind != packet.PUBREC && a.Kind != packet.PUBCOMP) {
			t.Fatalf("got %v %d, want PUBREC or PUBCOMP 9", a.Kind, a.PacketID)
		}
		if a.Kind == packet.PUBCOMP {
			break
		}
	}
	// PUBCOMP answers PUBREL, which was sent after the resend: the resend has been handled.
	select {
	case m2 := <-ch:
		t.Fatalf("delivered twice: %+v", m2)
	default:
	}
}

func TestInboundReceiveMaximumViolation(t *testing.T) {
	p := newPeer(t)
	c, pc, cp := connectPeer(t, p, &packet.Connack{}, WithReceiveMaximum(2), WithStrictReceiveMaximum(true))
	if cp.ReceiveMaximum != 2 {
		t.Fatalf("CONNECT advertised receive maximum %d, want 2", cp.ReceiveMaximum)
	}
	if _, _, err := subscribeVia(t, c, pc, "rm", 1); err != nil {
		t.Fatal(err)
	}
	for id := uint16(1); id <= 3; id++ {
		pc.send(&packet.Publish{Topic: "rm", QoS: 1, PacketID: id})
	}
	if code := pc.expectDisconnect(); code != packet.ReceiveMaximumExceeded {
		t.Fatalf("DISCONNECT %v, want receive maximum exceeded", code)
	}
}

// Every malformed or forbidden packet from the server ends the connection with DISCONNECT
// carrying the reason code the specification names, and never panics.
func TestServerProtocolViolations(t *testing.T) {
	cases := []struct {
		name string
		raw  []byte
		want packet.ReasonCode
	}{
		{"publish QoS 3", []byte{0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01}, packet.MalformedPacket},
		{"reserved type 0", []byte{0x00, 0x00}, packet.MalformedPacket},
		{"topic not UTF-8", []byte{0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00}, packet.MalformedPacket},
		{"topic with NUL", []byte{0x30, 0x05, 0x00, 0x02, 'a', 0x00, 0x00}, packet.MalformedPacket},
		{"unknown property", []byte{0x30, 0x06, 0x00, 0x01, 'a', 0x02, 0x7F, 0x00}, packet.MalformedPacket},
		{"property length past end", []byte{0x30, 0x04, 0x00, 0x01, 'a', 0x09}, packet.MalformedPacket},
		{"alias above maximum", []byte{0x30, 0x07, 0x00, 0x01, 'a', 0x03, 0x23, 0x00, 0x05}, packet.TopicAliasInvalid},
		{"alias never set", []byte{0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01}, packet.ProtocolError},
		{"empty topic without alias", []byte{0x30, 0x03, 0x00, 0x00, 0x00}, packet.ProtocolError},
		{"wildcard in topic", []byte{0x30, 0x05, 0x00, 0x02, 'a', '#', 0x00}, packet.ProtocolError},
		{"CONNECT from server", (&packet.Connect{ClientID: "x"}).AppendTo(nil), packet.ProtocolError},
		{"SUBSCRIBE from server", (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a"}}}).AppendTo(nil), packet.ProtocolError},
		{"five-byte length", []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, packet.MalformedPacket},
		{"PUBACK wrong flags", []byte{0x41, 0x02, 0x00, 0x01}, packet.MalformedPacket},
		{"too large for our maximum", append([]byte{0x30, 0xE8, 0x07}, make([]byte, 1000)...), packet.PacketTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t)
			_, pc, _ := connectPeer(t, p, &packet.Connack{}, WithInboundTopicAliasMaximum(2), WithMaximumPacketSize(512))
			pc.sendRaw(tc.raw)
			if code := pc.expectDisconnect(); code != tc.want {
				t.Fatalf("DISCONNECT %v, want %v", code, tc.want)
			}
		})
	}
}

func TestInboundTopicAlias(t *testing.T) {
	p := newPeer(t)
	c, pc, cp := connectPeer(t, p, &packet.Connack{}, WithInboundTopicAliasMaximum(4))
	if cp.TopicAliasMaximum != 4 {
		t.Fatalf("CONNECT topic alias maximum %d, want 4", cp.TopicAliasMaximum)
	}
	ch, _, err := subscribeVia(t, c, pc, "alias/#", 0)
	if err != nil {
		t.Fatal(err)
	}
	pc.send(&packet.Publish{Topic: "alias/one", TopicAlias: 2, Payload: []byte("1")})
	pc.send(&packet.Publish{TopicAlias: 2, Payload: []byte("2")})
	pc.send(&packet.Publish{Topic: "alias/two", TopicAlias: 2, Payload: []byte("3")})
	pc.send(&packet.Publish{TopicAlias: 2, Payload: []byte("4")})
	for i, want := range []string{"alias/one", "alias/one", "alias/two", "alias/two"} {
		if m := recv(t, ch); m.Topic != want || string(m.Payload) != fmt.Sprint(i+1) {
			t.Fatalf("message %d: topic %q payload %q, want %q", i, m.Topic, m.Payload, want)
		}
	}
}

// CONNACK capabilities are enforced before anything is written.
func TestConnackLimitsEnforced(t *testing.T) {
	p := newPeer(t)
	ca := &packet.Connack{
		MaximumQoS:           packet.Ptr(byte(1)),
		RetainAvailable:      packet.Ptr(false),
		MaximumPacketSize:    100,
		WildcardSubAvailable: packet.Ptr(false),
		SharedSubAvailable:   packet.Ptr(false),
		SubIDAvailable:       packet.Ptr(false),
		AssignedClientID:     "given-by-broker",
		ServerKeepAlive:      packet.Ptr(uint16(7)),
		ReceiveMaximum:       3,
	}
	c, pc, _ := connectPeer(t, p, ca)
	ctx := testCtx(t)
	info := c.Info()
	if info.MaximumQoS != 1 || info.RetainAvailable || info.MaximumPacketSize != 100 ||
		info.WildcardSubs || info.SharedSubs || info.SubscriptionIDs || info.ReceiveMaximum != 3 ||
		info.KeepAlive != 7*time.Second {
		t.Fatalf("info does not reflect CONNACK: %+v", info)
	}
	if c.ClientID() != "given-by-broker" {
		t.Fatalf("ClientID %q", c.ClientID())
	}
	checks := []struct {
		name string
		err  error
		want error
	}{
		{"qos2", c.Publish(ctx, PublishOptions{Topic: "t", QoS: 2}), ErrQoSNotSupported},
		{"retain", c.Publish(ctx, PublishOptions{Topic: "t", Retain: true}), ErrRetainNotSupported},
		{"too large", c.Publish(ctx, PublishOptions{Topic: "t", Payload: make([]byte, 200)}), ErrPacketTooLarge},
		{"wildcard", subErr(c, "a/+"), ErrWildcardsNotSupported},
		{"shared", subErr(c, "$share/g/a"), ErrSharedNotSupported},
		{"subid", subErr(c, "a", SubIdentifier(5)), ErrSubIDNotSupported},
	}
	for _, ch := range checks {
		if !errors.Is(ch.err, ch.want) {
			t.Errorf("%s: got %v, want %v", ch.name, ch.err, ch.want)
		}
	}
	if !pc.quiet(200 * time.Millisecond) {
		t.Fatal("a refused operation reached the wire")
	}
}

func subErr(c *Client, filter string, opts ...SubOption) error {
	_, _, err := c.Subscribe(context.Background(), []TopicFilter{{Topic: filter}}, opts...)
	return err
}

func TestConnackRefusal(t *testing.T) {
	p := newPeer(t)
	c, err := New(WithBroker(p.url()))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	p.handshake(&packet.Connack{ReasonCode: packet.BadUserNameOrPassword, ReasonString: "nope"})
	err = <-errc
	var rc *ReasonCodeError
	if !errors.As(err, &rc) || rc.Code != packet.BadUserNameOrPassword || rc.Reason != "nope" {
		t.Fatalf("got %v, want a bad user name or password refusal", err)
	}
	if c.Connected() {
		t.Fatal("Connected after a refusal")
	}
}

func TestConnackMalformed(t *testing.T) {
	p := newPeer(t)
	c, err := New(WithBroker(p.url()))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc := p.accept()
	pc.read()
	// CONNACK with Receive Maximum 0, a protocol error.
	pc.sendRaw([]byte{0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00})
	if err := <-errc; !errors.Is(err, packet.ErrProtocol) {
		t.Fatalf("got %v, want a protocol error", err)
	}
}

// One goroutine with PublishAsync keeps the broker's whole Receive Maximum window busy and
// never exceeds it.
func TestPublishAsyncFillsWindow(t *testing.T) {
	const window = 10
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{ReceiveMaximum: window})
	ctx := testCtx(t)
	const total = 50
	var wg sync.WaitGroup
	tokens := make(chan *PublishToken, total)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range total {
			tok, err := c.PublishAsync(ctx, PublishOptions{Topic: "w", QoS: 1, Payload: []byte{byte(i)}})
			if err != nil {
				t.Error(err)
				return
			}
			tokens <- tok
		}
		close(tokens)
	}()
	received := 0
	for received < total {
		var ids []uint16
		for range window {
			pub, ok := pc.read().(*packet.Publish)
			if !ok {
				t.Fatal("expected PUBLISH")
			}
			if int(pub.Payload[0]) != received {
				t.Fatalf("payload %d out of order, want %d", pub.Payload[0], received)
			}
			received++
			ids = append(ids, pub.PacketID)
		}
		if !pc.quiet(150 * time.Millisecond) {
			t.Fatalf("more than %d publishes outstanding", window)
		}
		for _, id := range ids {
			pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: id})
		}
	}
	wg.Wait()
	for tok := range tokens {
		if err := tok.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPublishRefusedIsTyped(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	errc := make(chan error, 1)
	go func() { errc <- c.Publish(testCtx(t), PublishOptions{Topic: "deny", QoS: 1}) }()
	pub := pc.read().(*packet.Publish)
	pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID, ReasonCode: packet.NotAuthorized, ReasonString: "no"})
	err := <-errc
	var rc *ReasonCodeError
	if !errors.As(err, &rc) || rc.Code != packet.NotAuthorized || rc.Reason != "no" || rc.Op != "publish" {
		t.Fatalf("got %v", err)
	}
}

func errorsAs[T error](err error, target *T) bool { return errors.As(err, target) }

// By default an overrun of the window is tolerated and counted: nothing is lost.
func TestInboundReceiveMaximumTolerated(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, WithReceiveMaximum(2))
	ch, _, err := subscribeVia(t, c, pc, "rm", 1)
	if err != nil {
		t.Fatal(err)
	}
	for id := uint16(1); id <= 3; id++ {
		pc.send(&packet.Publish{Topic: "rm", QoS: 1, PacketID: id})
	}
	// All three are received before any is acknowledged: an early Ack would free a place
	// in the window before the third arrives, and there would be no overrun to count.
	var ms []*Message
	for range 3 {
		ms = append(ms, recv(t, ch))
	}
	for _, m := range ms {
		m.Ack()
	}
	if got := fmt.Sprint(readAcks(t, pc, 3)); got != "[1 2 3]" {
		t.Fatalf("acks %s", got)
	}
	if s := c.Stats(); s.ReceiveMaxExceeded != 1 {
		t.Fatalf("overrun counted %d times, want 1", s.ReceiveMaxExceeded)
	}
}
