package tern

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// Scripted-peer tests of MQTT 3.1.1: what goes on the wire, the features refused before
// sending, and the fallback from 5 to 3.1.1 against peers that refuse level 5 the ways
// brokers do.

// readAt reads the next packet from pc at protocol level v.
func readAt(t *testing.T, pc *peerConn, v byte) packet.Packet {
	t.Helper()
	pc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := pc.r.ReadFrame()
	if err != nil {
		t.Fatalf("peer: read: %v", err)
	}
	defer f.Release()
	p, err := packet.DecodeVersion(&f, v)
	if err != nil {
		t.Fatalf("peer: decode at level %d: %v", v, err)
	}
	if pub, ok := p.(*packet.Publish); ok {
		p = pub.Clone()
	}
	return p
}

var connack311 = []byte{0x20, 2, 0, 0}

// start311 starts a client against p and answers its CONNECT with a 3.1.1 CONNACK.
func start311(t *testing.T, p *peer, opts ...Option) (*Client, *peerConn, *packet.Connect) {
	t.Helper()
	c, err := New(append([]Option{WithBroker(p.url()), WithReconnectBackoff(ConstantBackoff(time.Hour))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc := p.accept()
	cp := readAt(t, pc, packet.Version311).(*packet.Connect)
	pc.sendRaw(connack311)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	pc.closeOnEOF()
	return c, pc, cp
}

// [MQTT-3.1.2-2] (3.1.1) level 4 on the wire, no properties; session expiry maps to Clean
// Session (documented on WithProtocol): 0 → Clean Session 1, above 0 → Clean Session 0 even
// with WithCleanStart(true).
func TestV311ConnectMapsSessionExpiry(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      []Option
		wantClean bool
	}{
		{"expiry-0", nil, true},
		{"expiry-1h", []Option{WithClientID("v311-keep"), WithSessionExpiry(time.Hour), WithCleanStart(true)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t)
			c, _, cp := start311(t, p, append([]Option{WithProtocol(MQTT311)}, tc.opts...)...)
			if cp.Version != packet.Version311 {
				t.Fatalf("CONNECT level %d, want 4", cp.Version)
			}
			if cp.CleanStart != tc.wantClean {
				t.Errorf("Clean Session %v, want %v", cp.CleanStart, tc.wantClean)
			}
			if got := c.Info().Version; got != packet.Version311 {
				t.Errorf("Info().Version = %d, want 4", got)
			}
			if got := c.Info().ReceiveMaximum; got != DefaultMQTT311Window {
				t.Errorf("window %d, want DefaultMQTT311Window", got)
			}
		})
	}
}

// Features 3.1.1 lacks are refused with ErrNotInV311 before anything is sent: never dropped.
func TestV311RefusesMQTT5Features(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := start311(t, p, WithProtocol(MQTT311))
	ctx := testCtx(t)
	for name, m := range map[string]PublishOptions{
		"user-properties": {Topic: "a", QoS: 1, UserProperties: []packet.UserProperty{{Key: "k", Value: "v"}}},
		"message-expiry":  {Topic: "a", QoS: 1, MessageExpiry: time.Minute},
		"content-type":    {Topic: "a", QoS: 0, ContentType: "text/plain"},
		"response-topic":  {Topic: "a", QoS: 2, ResponseTopic: "r"},
		"correlation":     {Topic: "a", QoS: 0, CorrelationData: []byte{1}},
		"payload-format":  {Topic: "a", QoS: 1, PayloadFormat: 1},
	} {
		if err := c.Publish(ctx, m); !errors.Is(err, ErrNotInV311) {
			t.Errorf("publish %s: %v, want ErrNotInV311", name, err)
		}
	}
	for name, f := range map[string]TopicFilter{
		"no-local":            {Topic: "a", NoLocal: true},
		"retain-as-published": {Topic: "a", RetainAsPublished: true},
		"retain-handling":     {Topic: "a", RetainHandling: packet.RetainDoNotSend},
	} {
		if _, _, err := c.Subscribe(ctx, []TopicFilter{f}); !errors.Is(err, ErrNotInV311) {
			t.Errorf("subscribe %s: %v, want ErrNotInV311", name, err)
		}
	}
	if _, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "a"}}, SubUserProperty("k", "v")); !errors.Is(err, ErrNotInV311) {
		t.Errorf("subscribe with user property: %v, want ErrNotInV311", err)
	}
	if err := c.DisconnectWith(ctx, DisconnectOptions{ReasonCode: packet.DisconnectWithWillMessage}); !errors.Is(err, ErrNotInV311) {
		t.Errorf("DisconnectWith reason: %v, want ErrNotInV311", err)
	}
	if err := c.DisconnectWith(ctx, DisconnectOptions{SessionExpiry: new(time.Duration)}); !errors.Is(err, ErrNotInV311) {
		t.Errorf("DisconnectWith session expiry: %v, want ErrNotInV311", err)
	}
	if !pc.quiet(200 * time.Millisecond) {
		t.Fatal("something was sent for a refused feature")
	}
	// The plain DISCONNECT of 3.1.1: two bytes, no reason code.
	if err := c.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	pc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(pc.nc)
	if !bytes.Equal(b, []byte{0xE0, 0}) {
		t.Errorf("DISCONNECT bytes % X, want E0 00", b)
	}
}

// Options 3.1.1 cannot carry fail in New, with ErrNotInV311.
func TestV311RefusesMQTT5Options(t *testing.T) {
	for name, o := range map[string]Option{
		"auth":             WithAuthenticator(stubAuth{}),
		"connect-property": WithConnectUserProperty("k", "v"),
		"response-info":    WithRequestResponseInformation(true),
		"will-properties":  WithWill(&packet.Will{Topic: "w", Payload: []byte("x"), ContentType: "text/plain"}),
	} {
		_, err := New(WithBroker("mqtt://127.0.0.1:1"), WithProtocol(MQTT311), o)
		if !errors.Is(err, ErrNotInV311) || !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: New = %v, want ErrNotInV311", name, err)
		}
	}
}

type stubAuth struct{}

func (stubAuth) Method() string                                   { return "stub" }
func (stubAuth) Start(context.Context) ([]byte, error)            { return nil, nil }
func (stubAuth) Continue(context.Context, []byte) ([]byte, error) { return nil, nil }
func (stubAuth) Done(context.Context, []byte) error               { return nil }

// QoS 1 and 2 on a 3.1.1 connection: level-4 PUBLISH and acknowledgements; a resend after
// a cut carries DUP=1 ([MQTT-3.3.1-1]) and PUBREL is resent for a message past PUBREC.
func TestV311PublishWireAndResend(t *testing.T) {
	p := newPeer(t)
	c, err := New(WithBroker(p.url()), WithProtocol(MQTT311), WithClientID("v311-resend"),
		WithSessionExpiry(time.Hour), WithReconnectBackoff(ConstantBackoff(10*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	ctx := testCtx(t)
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(ctx) }()
	pc := p.accept()
	readAt(t, pc, packet.Version311)
	pc.sendRaw(connack311)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t1, err := c.PublishAsync(ctx, PublishOptions{Topic: "v/1", QoS: 1, Payload: []byte("one")})
	if err != nil {
		t.Fatal(err)
	}
	t2, err := c.PublishAsync(ctx, PublishOptions{Topic: "v/2", QoS: 2, Payload: []byte("two")})
	if err != nil {
		t.Fatal(err)
	}
	p1 := readAt(t, pc, packet.Version311).(*packet.Publish)
	p2 := readAt(t, pc, packet.Version311).(*packet.Publish)
	if p1.Dup || p2.Dup || string(p1.Payload) != "one" || string(p2.Payload) != "two" {
		t.Fatalf("first sends: %+v %+v", p1, p2)
	}
	pc.sendRaw([]byte{0x50, 2, byte(p2.PacketID >> 8), byte(p2.PacketID)}) // PUBREC, level 4
	if rel := readAt(t, pc, packet.Version311).(*packet.Ack); rel.Kind != packet.PUBREL {
		t.Fatalf("got %v, want PUBREL", rel.Kind)
	}
	pc.nc.Close() // cut

	pc = p.accept()
	cp := readAt(t, pc, packet.Version311).(*packet.Connect)
	if cp.CleanStart {
		t.Fatal("reconnect with Clean Session 1: the session would be lost")
	}
	pc.sendRaw([]byte{0x20, 2, 1, 0}) // session present
	r1 := readAt(t, pc, packet.Version311).(*packet.Publish)
	if !r1.Dup || r1.PacketID != p1.PacketID || string(r1.Payload) != "one" {
		t.Fatalf("resend %+v, want DUP=1 id %d", r1, p1.PacketID)
	}
	rel := readAt(t, pc, packet.Version311).(*packet.Ack)
	if rel.Kind != packet.PUBREL || rel.PacketID != p2.PacketID {
		t.Fatalf("got %v %d, want PUBREL %d", rel.Kind, rel.PacketID, p2.PacketID)
	}
	pc.sendRaw([]byte{0x40, 2, byte(p1.PacketID >> 8), byte(p1.PacketID)})
	pc.sendRaw([]byte{0x70, 2, byte(p2.PacketID >> 8), byte(p2.PacketID)})
	if err := t1.Wait(ctx); err != nil {
		t.Error(err)
	}
	if err := t2.Wait(ctx); err != nil {
		t.Error(err)
	}
}

// The fallback from 5 to 3.1.1, once for each way a broker refuses level 5: a 3.1.1 CONNACK
// with return code 1 ([MQTT-3.1.2-2] of 3.1.1), an MQTT 5 CONNACK 0x84, and closing the
// connection without CONNACK.
func TestV311Fallback(t *testing.T) {
	refusals := map[string]func(pc *peerConn){
		"connack-return-code-1": func(pc *peerConn) { pc.sendRaw([]byte{0x20, 2, 0, 1}) },
		"connack-0x84": func(pc *peerConn) {
			pc.send(&packet.Connack{ReasonCode: packet.UnsupportedProtocolVersion})
		},
		"close": func(pc *peerConn) {},
		"reset": func(pc *peerConn) { pc.nc.(*net.TCPConn).SetLinger(0) },
	}
	for name, refuse := range refusals {
		t.Run(name, func(t *testing.T) {
			p := newPeer(t)
			life := newLifecycle()
			c, err := New(append([]Option{WithBroker(p.url()), WithProtocol(MQTT5Fallback311),
				WithReconnectBackoff(ConstantBackoff(time.Hour))}, life.options()...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c.Disconnect(ctx)
			})
			ctx := testCtx(t)
			errc := make(chan error, 1)
			go func() { errc <- c.Connect(ctx) }()
			pc := p.accept()
			if cp := readAt(t, pc, packet.Version5).(*packet.Connect); cp.Version != 0 {
				t.Fatalf("first CONNECT at level %d, want 5", cp.Version)
			}
			refuse(pc)
			pc.nc.Close()
			pc = p.accept()
			if name == "close" || name == "reset" {
				// A close is not taken for a refusal until it happens twice in a row.
				if cp := readAt(t, pc, packet.Version5).(*packet.Connect); cp.Version != 0 {
					t.Fatalf("second CONNECT at level %d, want 5 again after a close", cp.Version)
				}
				refuse(pc)
				pc.nc.Close()
				pc = p.accept()
			}
			if cp := readAt(t, pc, packet.Version311).(*packet.Connect); cp.Version != packet.Version311 {
				t.Fatalf("second CONNECT at level %d, want 4", cp.Version)
			}
			pc.sendRaw(connack311)
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if info := life.waitUp(t, 10*time.Second, "fallback"); info.Version != packet.Version311 {
				t.Fatalf("Info().Version = %d, want 4", info.Version)
			}
			// Now 3.1.1: properties are refused, plain messages go out at level 4.
			if err := c.Publish(ctx, PublishOptions{Topic: "a", ContentType: "x"}); !errors.Is(err, ErrNotInV311) {
				t.Errorf("publish with a property after fallback: %v", err)
			}
			tok, err := c.PublishAsync(ctx, PublishOptions{Topic: "a", QoS: 1, Payload: []byte("p")})
			if err != nil {
				t.Fatal(err)
			}
			pub := readAt(t, pc, packet.Version311).(*packet.Publish)
			pc.sendRaw([]byte{0x40, 2, byte(pub.PacketID >> 8), byte(pub.PacketID)})
			if err := tok.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// connectFallback starts Connect of an MQTT5Fallback311 client against p in the background
// and returns the client and Connect's result.
func connectFallback(t *testing.T, p *peer) (*Client, <-chan error) {
	t.Helper()
	c, err := New(WithBroker(p.url()), WithProtocol(MQTT5Fallback311), WithReconnectBackoff(ConstantBackoff(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	return c, errc
}

// A broker that closes one level-5 CONNECT (restarting, shedding load) and takes the next
// does not send the client to 3.1.1 for the rest of its life.
func TestV311NoFallbackOnOneClose(t *testing.T) {
	p := newPeer(t)
	c, errc := connectFallback(t, p)
	pc := p.accept()
	readAt(t, pc, packet.Version5)
	pc.nc.Close()
	pc = p.accept()
	if cp := readAt(t, pc, packet.Version5).(*packet.Connect); cp.Version != 0 {
		t.Fatalf("after one close the CONNECT is at level %d, want 5", cp.Version)
	}
	pc.send(&packet.Connack{})
	pc.closeOnEOF()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if v := c.Info().Version; v != packet.Version5 {
		t.Fatalf("Info().Version = %d, want 5", v)
	}
}

// No fallback for a refusal that is not about the protocol version (bad credentials): the
// error is the broker's, and a 3.1.1 CONNECT would not help.
func TestV311NoFallbackOnOtherRefusal(t *testing.T) {
	p := newPeer(t)
	_, errc := connectFallback(t, p)
	pc, _ := p.handshake(&packet.Connack{ReasonCode: packet.BadUserNameOrPassword})
	defer pc.nc.Close()
	var rc *ReasonCodeError
	if err := <-errc; !errors.As(err, &rc) || rc.Code != packet.BadUserNameOrPassword {
		t.Fatalf("Connect = %v, want the 0x86 refusal", err)
	}
	select {
	case <-p.conns:
		t.Fatal("a second (3.1.1) connection after a credentials refusal")
	default:
	}
}
