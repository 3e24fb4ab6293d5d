package tern

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

// Hostile-broker scenarios for the client's security and resource limits: server redirects,
// inbound packet size, reason codes a packet may not carry. Each names the rule or promise
// it defends.

// [MQTT-3.14.2-1] A DISCONNECT whose reason code is not in the DISCONNECT table is malformed:
// the client answers DISCONNECT 0x81 and does not take it for the broker's reason.
func TestHostileDisconnectReasonCodeNotInTable(t *testing.T) {
	for _, code := range []byte{0x01, 0x18, 0x86, 0x91, 0xA3} {
		t.Run(packet.ReasonCode(code).String(), func(t *testing.T) {
			p := newPeer(t)
			var got []*packet.Disconnect
			c, pc, _ := connectPeer(t, p, &packet.Connack{},
				WithOnServerDisconnect(func(d *packet.Disconnect) { got = append(got, d) }))
			pc.sendRaw([]byte{byte(packet.DISCONNECT) << 4, 1, code})
			if rc := pc.expectDisconnect(); rc != packet.MalformedPacket {
				t.Fatalf("DISCONNECT %v, want malformed packet", rc)
			}
			c.Disconnect(testCtx(t)) // runs the callbacks already posted
			if len(got) != 0 {
				t.Fatalf("server disconnect reported: %+v", got[0])
			}
		})
	}
}

// A broker must not send a packet above the Maximum Packet Size the client advertised
// ([MQTT-3.1.2-24]); the client advertises a default one and refuses a larger packet from its
// fixed header alone, with DISCONNECT 0x95, before reading or allocating the body. The body
// here is only declared, never sent: a client that waited for it would hang.
func TestHostileOversizedPublishRefusedFromHeader(t *testing.T) {
	p := newPeer(t)
	_, pc, cp := connectPeer(t, p, &packet.Connack{})
	if cp.MaximumPacketSize != DefaultMaximumPacketSize {
		t.Fatalf("CONNECT Maximum Packet Size %d, want the default %d", cp.MaximumPacketSize, DefaultMaximumPacketSize)
	}
	// PUBLISH QoS 0 declaring 268,435,455 bytes of body, then the start of a topic.
	pc.sendRaw([]byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 'a'})
	if code := pc.expectDisconnect(); code != packet.PacketTooLarge {
		t.Fatalf("DISCONNECT %v, want packet too large", code)
	}
}

// The limit holds from the first byte the broker sends: a CONNACK (or AUTH) above it is
// refused from its header, the attempt fails with 0x95 and the broker is told so.
func TestHostileOversizedConnackRefused(t *testing.T) {
	pc, errc := connectAsync(t, newPeer(t), WithConnectTimeout(10*time.Second))
	// CONNACK declaring 2 MiB of body: flags, reason code, then properties that never come.
	pc.sendRaw([]byte{0x20, 0x80, 0x80, 0x80, 0x01, 0x00, 0x00})
	if code := pc.expectDisconnect(); code != packet.PacketTooLarge {
		t.Fatalf("DISCONNECT %v, want packet too large", code)
	}
	err := <-errc
	var perr *packet.Error
	if !errors.As(err, &perr) || perr.Code != packet.PacketTooLarge {
		t.Fatalf("Connect = %v, want packet too large", err)
	}
}

// The default is a default: WithMaximumPacketSize raises it, and UnlimitedPacketSize leaves
// only the protocol's own limit (no Maximum Packet Size in CONNECT).
func TestMaximumPacketSizeConfigurable(t *testing.T) {
	big := &packet.Publish{Topic: "big", Payload: bytes.Repeat([]byte{'x'}, DefaultMaximumPacketSize)}
	for _, tc := range []struct {
		name      string
		opt       Option
		advertise uint32
	}{
		{"raised", WithMaximumPacketSize(2 * DefaultMaximumPacketSize), 2 * DefaultMaximumPacketSize},
		{"unlimited", WithMaximumPacketSize(UnlimitedPacketSize), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t)
			c, pc, cp := connectPeer(t, p, &packet.Connack{}, tc.opt)
			if cp.MaximumPacketSize != tc.advertise {
				t.Fatalf("CONNECT Maximum Packet Size %d, want %d", cp.MaximumPacketSize, tc.advertise)
			}
			ch, _, err := subscribeVia(t, c, pc, "big", 0)
			if err != nil {
				t.Fatal(err)
			}
			pc.send(big)
			if m := recv(t, ch); len(m.Payload) != len(big.Payload) {
				t.Fatalf("payload %d bytes, want %d", len(m.Payload), len(big.Payload))
			}
		})
	}
}

// Against a real broker the advertised default is honoured: Mosquitto does not forward a
// message above it to the client ([MQTT-3.1.2-25]: it drops it), and the connection goes on.
func TestMaximumPacketSizeDefaultWithMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	sub := newTestClient(t, b.URL)
	pub := newTestClient(t, b.URL, WithMaximumPacketSize(UnlimitedPacketSize))
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "size/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	huge := bytes.Repeat([]byte{'x'}, DefaultMaximumPacketSize+1)
	if err := pub.Publish(ctx, PublishOptions{Topic: "size/huge", Payload: huge, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, PublishOptions{Topic: "size/small", Payload: []byte("s"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch); m.Topic != "size/small" {
		t.Fatalf("got %s (%d bytes) first, want size/small", m.Topic, len(m.Payload))
	}
	if s := sub.Stats(); s.ConnectionLost != 0 || s.Connects != 1 {
		t.Fatalf("subscriber connection did not survive: %+v", s)
	}
}
