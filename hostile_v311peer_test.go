package tern

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// A 3.1.1 broker that breaks its protocol: answers the client cannot take. Nothing panics, no
// connection is taken as up on a bad CONNACK, a request is never left waiting forever.

// connect311Raw starts a 3.1.1 client against p and answers its CONNECT with raw bytes;
// it returns Connect's error.
func connect311Raw(t *testing.T, p *peer, answer []byte) error {
	t.Helper()
	c, err := New(WithBroker(p.url()), WithProtocol(MQTT311), WithReconnectBackoff(ConstantBackoff(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc := p.accept()
	readAt(t, pc, packet.Version311)
	pc.sendRaw(answer)
	select {
	case err := <-errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Connect did not return")
	}
	return nil
}

// [MQTT-3.2.2-4] (3.1.1) return codes are 0-5, the CONNACK body two bytes; anything else is
// a refusal, never a connection.
func TestV311HostileConnack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer []byte
	}{
		{"code 6", []byte{0x20, 2, 0, 6}},
		{"code 0x80", []byte{0x20, 2, 0, 0x80}},
		{"code 0xFF", []byte{0x20, 2, 0, 0xFF}},
		{"MQTT 5 properties", []byte{0x20, 5, 0, 0, 2, 0x21, 0}},
		{"flags reserved bits", []byte{0x20, 2, 0xFE, 0}},
		{"short", []byte{0x20, 1, 0}},
		{"AUTH instead", []byte{0xF0, 2, 0x18, 0}},
		{"session present with code", []byte{0x20, 2, 1, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t)
			if err := connect311Raw(t, p, tc.answer); err == nil {
				t.Fatalf("CONNACK % X taken as a connection", tc.answer)
			}
		})
	}
}

// After a good 3.1.1 CONNACK the broker answers a SUBSCRIBE with what 3.1.1 does not have: an
// AUTH packet (type 15 is reserved in 3.1.1) or an MQTT 5 SUBACK code. The client closes the
// connection without sending anything first (no DISCONNECT: a 3.1.1 client sending one would
// make the broker discard the will). [MQTT-3.9.3-2] (3.1.1) SUBACK codes 0x00-0x02, 0x80.
func TestV311HostilePacketsClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(id uint16) []byte
	}{
		{"AUTH", func(uint16) []byte { return []byte{0xF0, 0} }},
		{"SUBACK MQTT 5 code", func(id uint16) []byte { return []byte{0x90, 4, byte(id >> 8), byte(id), 0x87, 0x87} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t)
			c, pc, _ := start311(t, p, WithProtocol(MQTT311))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			go c.Subscribe(ctx, []TopicFilter{{Topic: "a", QoS: 1}, {Topic: "b", QoS: 1}})
			sub, ok := readAt(t, pc, packet.Version311).(*packet.Subscribe)
			if !ok {
				t.Fatal("no SUBSCRIBE")
			}
			pc.sendRaw(tc.send(sub.PacketID))
			pc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			f, err := pc.r.ReadFrame()
			if err == nil {
				t.Errorf("client sent %s instead of closing", f.Type())
				f.Release()
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				t.Errorf("peer read: %v, want the client to close", err)
			}
		})
	}
}

// [MQTT-3.8.4-5] (3.1.1) a SUBACK has one return code per filter. One with too few or too
// many (a property block read as codes is too many) fails Subscribe at once with an error
// that says so; it is not taken as a grant.
func TestV311HostileSubackCount(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(id uint16) []byte
	}{
		{"too few", func(id uint16) []byte { return []byte{0x90, 3, byte(id >> 8), byte(id), 1} }},
		{"too many", func(id uint16) []byte { return []byte{0x90, 5, byte(id >> 8), byte(id), 1, 1, 1} }},
		{"properties", func(id uint16) []byte { return []byte{0x90, 5, byte(id >> 8), byte(id), 0, 1, 1} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t)
			c, pc, _ := start311(t, p, WithProtocol(MQTT311))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "a", QoS: 1}, {Topic: "b", QoS: 1}})
				errc <- err
			}()
			sub := readAt(t, pc, packet.Version311).(*packet.Subscribe)
			pc.sendRaw(tc.send(sub.PacketID))
			if err := <-errc; err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Subscribe: %v, want a refusal naming the count", err)
			}
		})
	}
}

// A PUBACK with an MQTT 5 reason code (and properties) on a 3.1.1 connection is malformed
// (3.1.1 §3.4.1: remaining length 2): the publish is not completed by it.
func TestV311HostilePuback(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := start311(t, p, WithProtocol(MQTT311))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := c.PublishAsync(ctx, PublishOptions{Topic: "t", QoS: 1, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	pub := readAt(t, pc, packet.Version311).(*packet.Publish)
	pc.sendRaw([]byte{0x40, 4, byte(pub.PacketID >> 8), byte(pub.PacketID), 0x10, 0})
	if _, err := pc.tryRead(10 * time.Second); err == nil {
		t.Error("client answered instead of closing")
	}
	select {
	case <-tok.Done():
		t.Fatalf("publish completed by a malformed PUBACK: %v", tok.Err())
	default:
	}
}
