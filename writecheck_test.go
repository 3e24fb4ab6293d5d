package tern

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

// Messages accepted before any CONNACK are checked when they are written, against the
// CONNACK of the connection that carries them: each one this broker cannot take fails with
// its named error, leaves the session and the store without being sent, and the message
// behind it still goes.

// quotaWaiters returns how many publishes wait for a place in the window.
func quotaWaiters(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.quotaQ)
}

// publishQueued starts a QoS 1/2 PublishAsync and waits until it is queued for the window,
// so that it has passed every check made when a message is accepted.
func publishQueued(t *testing.T, c *Client, m PublishOptions) chan error {
	t.Helper()
	n := quotaWaiters(c)
	errc := make(chan error, 1)
	go func() {
		tok, err := c.PublishAsync(testCtx(t), m)
		if err == nil {
			err = tok.Wait(testCtx(t))
		}
		errc <- err
	}()
	waitFor(t, func() bool { return quotaWaiters(c) == n+1 })
	return errc
}

func waitErr(t *testing.T, what string, errc chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no outcome within 20s", what)
	}
	return nil
}

func TestLimitsCheckedWhenWritten(t *testing.T) {
	p := newPeer(t)
	store := NewMemoryStore()
	c, err := New(append(fastOpts, WithBroker(p.url()), WithBackgroundConnect(), WithStats(),
		WithStore(store), WithTopicAliases(true))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })

	// Accepted with no CONNACK known: nothing to check them against yet.
	qos2 := publishQueued(t, c, PublishOptions{Topic: "w", QoS: 2, Payload: []byte("q2")})
	retained := publishQueued(t, c, PublishOptions{Topic: "w", QoS: 1, Retain: true})
	large := publishQueued(t, c, PublishOptions{Topic: "w", QoS: 1, Payload: make([]byte, 300)})
	// 198 bytes: fits the broker's 200, but not with a new Topic Alias property added.
	fits := publishQueued(t, c, PublishOptions{Topic: "x", QoS: 1, Payload: make([]byte, 189)})
	ok := publishQueued(t, c, PublishOptions{Topic: "w", QoS: 1, Payload: []byte("ok")})

	pc, _ := p.handshake(&packet.Connack{MaximumQoS: packet.Ptr(byte(1)), RetainAvailable: packet.Ptr(false),
		MaximumPacketSize: 200, TopicAliasMaximum: 5})
	for range 2 {
		pub := readPublish(t, pc)
		if pub.QoS != 1 || pub.Retain || pub.Len() > 200 {
			t.Fatalf("a message the broker cannot take was sent: QoS %d retain %v, %d bytes", pub.QoS, pub.Retain, pub.Len())
		}
		pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
	}
	for _, r := range []struct {
		name string
		errc chan error
		want error
	}{{"qos2", qos2, ErrQoSNotSupported}, {"retain", retained, ErrRetainNotSupported},
		{"too large", large, ErrPacketTooLarge}, {"fits without alias", fits, nil}, {"ok", ok, nil}} {
		if err := waitErr(t, r.name, r.errc); !errors.Is(err, r.want) || (r.want == nil && err != nil) {
			t.Errorf("%s: got %v, want %v", r.name, err, r.want)
		}
	}
	if !pc.quiet(200 * time.Millisecond) {
		t.Fatal("more than the two acceptable messages reached the wire")
	}
	if recs, _ := store.Load(); len(recs) != 0 {
		t.Fatalf("store keeps %d records of refused or completed messages", len(recs))
	}
	if s := c.Stats(); s.Connects != 1 || s.PublishFailed != 3 || !c.Connected() {
		t.Fatalf("connects %d, failed %d, connected %v", s.Connects, s.PublishFailed, c.Connected())
	}
	c.mu.Lock()
	inflight, inUse := len(c.inflight), c.inUse
	c.mu.Unlock()
	if inflight != 0 || inUse != 0 {
		t.Fatalf("refused messages left in the session: %d in flight, %d window places", inflight, inUse)
	}

	// A QoS 0 message too large for this broker fails too, before the wire.
	if err := c.Publish(testCtx(t), PublishOptions{Topic: "w", Payload: make([]byte, 300)}); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("QoS 0 too large: %v", err)
	}
	// SUBSCRIBE is held to the Maximum Packet Size as well.
	if err := subErr(c, strings.Repeat("f", 250)); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("subscribe too large: %v", err)
	}
	if !pc.quiet(200 * time.Millisecond) {
		t.Fatal("a packet too large for the broker reached the wire")
	}
}

// SUBSCRIBE and UNSUBSCRIBE made under one broker's limits are checked again when a stricter
// one takes over: a pending request is failed instead of resent, a new one fails at once.
func TestRequestsCheckedOnStricterBroker(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, append(fastOpts, WithClientID("req"))...)
	long := strings.Repeat("a", 250)
	_, granted, err := subscribeVia(t, c, pc, long, 1)
	if err != nil {
		t.Fatal(err)
	}
	pending := make(chan error, 1)
	go func() {
		_, _, err := c.Subscribe(testCtx(t), []TopicFilter{{Topic: long + "/b"}})
		pending <- err
	}()
	if _, ok := pc.read().(*packet.Subscribe); !ok {
		t.Fatal("expected SUBSCRIBE")
	}
	pc.nc.Close() // unanswered; the client reconnects to a stricter broker
	pc2, _ := p.handshake(&packet.Connack{SessionPresent: true, MaximumPacketSize: 200})
	if err := waitErr(t, "pending subscribe", pending); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("pending subscribe on the stricter broker: %v", err)
	}
	waitFor(t, c.Connected)
	if err := granted.Unsubscribe(testCtx(t)); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("unsubscribe too large: %v", err)
	}
	if !pc2.quiet(200 * time.Millisecond) {
		t.Fatal("a request too large for the broker reached the wire")
	}
	if s := c.Stats(); s.Connects != 2 {
		t.Fatalf("%d connects, want 2", s.Connects)
	}
}

// Real broker, background connect: a 1,000-byte message accepted before the first CONNACK
// of a broker whose Maximum Packet Size is 200 fails with ErrPacketTooLarge; it causes no
// reconnection and does not hold back the messages behind it.
func TestTooLargeBeforeConnackNoStorm(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{Extra: []string{"max_packet_size 200"}})
	px := faultproxy.New(t, b.Addr)
	px.Stall() // the first CONNACK waits until every message is accepted
	store := NewMemoryStore()
	c, err := New(WithBroker(px.URL()), WithBackgroundConnect(), WithStats(), WithStore(store),
		WithReconnectBackoff(ConstantBackoff(50*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	large := publishQueued(t, c, PublishOptions{Topic: "big", QoS: 1, Payload: make([]byte, 1000)})
	var small []chan error
	for range 5 {
		small = append(small, publishQueued(t, c, PublishOptions{Topic: "small", QoS: 1, Payload: []byte("s")}))
	}
	px.Resume()
	if err := waitErr(t, "large", large); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("large message: %v, want ErrPacketTooLarge", err)
	}
	for i, errc := range small {
		if err := waitErr(t, "small", errc); err != nil {
			t.Fatalf("small message %d: %v", i, err)
		}
	}
	if s := c.Stats(); s.Connects != 1 || s.ConnectionLost != 0 {
		t.Fatalf("%d connects, %d connections lost: the large message reached the broker\n%s",
			s.Connects, s.ConnectionLost, tail(b.Log(), 10))
	}
	if recs, _ := store.Load(); len(recs) != 0 {
		t.Fatalf("store keeps %d records", len(recs))
	}
}

// Failover to a stricter broker: a message sent to the first broker and resent after the
// switch fails with ErrPacketTooLarge instead of being resent for ever.
func TestResendToStricterBroker(t *testing.T) {
	lax := brokertest.StartMosquitto(t, brokertest.Config{})
	strict := brokertest.StartMosquitto(t, brokertest.Config{Extra: []string{"max_packet_size 200"}})
	px := faultproxy.New(t, lax.Addr)
	c := newTestClient(t, px.URL(), WithReconnectBackoff(ConstantBackoff(50*time.Millisecond)))
	px.Stall() // written, never acknowledged
	large := make(chan error, 1)
	go func() {
		large <- c.Publish(testCtx(t), PublishOptions{Topic: "big", QoS: 1, Payload: make([]byte, 1000)})
	}()
	waitFor(t, func() bool { return c.Stats().PublishSent == 1 })
	small := make(chan error, 1)
	go func() { small <- c.Publish(testCtx(t), PublishOptions{Topic: "small", QoS: 1, Payload: []byte("s")}) }()
	waitFor(t, func() bool { return c.Stats().PublishSent == 2 })
	if err := c.SetBrokers(strict.URL); err != nil {
		t.Fatal(err)
	}
	px.Cut()
	if err := waitErr(t, "large", large); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("large message after failover: %v, want ErrPacketTooLarge", err)
	}
	if err := waitErr(t, "small", small); err != nil {
		t.Fatalf("small message after failover: %v", err)
	}
	if s := c.Stats(); s.Connects != 2 || s.ConnectionLost != 1 {
		t.Fatalf("%d connects, %d connections lost, want 2 and 1", s.Connects, s.ConnectionLost)
	}
}

// A message restored from the store that the broker cannot take is failed and its record
// deleted, and the restored message behind it is delivered.
func TestRestoredMessageTooLarge(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{Extra: []string{"max_packet_size 200"}})
	store := NewMemoryStore()
	born := time.Now()
	for i, pl := range [][]byte{make([]byte, 1000), []byte("small")} {
		pub := packet.Publish{Topic: "restored", QoS: 1, PacketID: uint16(i + 1), Payload: pl}
		if err := store.Put(StoreRecord{Kind: RecordPublish, ID: pub.PacketID, Seq: uint64(i + 1),
			Packet: pub.AppendTo(nil), Time: born}); err != nil {
			t.Fatal(err)
		}
	}
	sub := newTestClient(t, b.URL)
	msgs, _, err := sub.Subscribe(testCtx(t), []TopicFilter{{Topic: "restored", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, b.URL, WithStore(store), WithReconnectBackoff(ConstantBackoff(50*time.Millisecond)))
	select {
	case m := <-msgs:
		if string(m.Payload) != "small" {
			t.Fatalf("got %d bytes, want the small message", len(m.Payload))
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the restored message behind the large one was not delivered\n%s", tail(b.Log(), 10))
	}
	waitFor(t, func() bool { recs, _ := store.Load(); return len(recs) == 0 })
	if s := c.Stats(); s.Connects != 1 || s.ConnectionLost != 0 || s.PublishFailed != 1 {
		t.Fatalf("%d connects, %d lost, %d failed; want 1, 0, 1", s.Connects, s.ConnectionLost, s.PublishFailed)
	}
}
