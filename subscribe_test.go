package tern

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// sendQoS1 sends n QoS 1 messages with ids from 1 and payloads "0".."n-1".
func sendQoS1(pc *peerConn, topic string, n int) {
	for i := range n {
		pc.send(&packet.Publish{Topic: topic, QoS: 1, PacketID: uint16(i + 1), Payload: []byte(fmt.Sprint(i))})
	}
}

// readAcks reads n PUBACKs and returns their packet ids in order.
func readAcks(t *testing.T, pc *peerConn, n int) []uint16 {
	t.Helper()
	var ids []uint16
	for len(ids) < n {
		if a, ok := pc.read().(*packet.Ack); ok && a.Kind == packet.PUBACK {
			ids = append(ids, a.PacketID)
		}
	}
	return ids
}

func TestDropNewest(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	dropped := make(chan string, 4)
	ch, _, err := subscribeVia(t, c, pc, "dn", 1, SubBuffer(2), SubDropPolicy(DropNewest),
		SubOnDrop(func(m *Message) { dropped <- string(m.Payload) }))
	if err != nil {
		t.Fatal(err)
	}
	sendQoS1(pc, "dn", 4)
	// Messages 2 and 3 find the buffer full: dropped and acknowledged at once, but their
	// PUBACKs wait behind 0 and 1 (arrival order). Nothing is consumed until both drops
	// happened, so the buffer is surely full.
	for _, want := range []string{"2", "3"} {
		select {
		case got := <-dropped:
			if got != want {
				t.Fatalf("dropped %s, want %s", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("nothing dropped")
		}
	}
	m0, m1 := recv(t, ch), recv(t, ch)
	if string(m0.Payload) != "0" || string(m1.Payload) != "1" {
		t.Fatalf("kept %q %q, want 0 1", m0.Payload, m1.Payload)
	}
	m0.Ack()
	m1.Ack()
	if got := fmt.Sprint(readAcks(t, pc, 4)); got != "[1 2 3 4]" {
		t.Fatalf("acks %s", got)
	}
	if s := c.Stats(); s.Dropped != 2 {
		t.Fatalf("stats dropped %d", s.Dropped)
	}
}

func TestDropOldestQueue(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	done := make(chan *packet.Suback, 1)
	var q *Queue[*Message]
	go func() {
		var err error
		q, _, err = c.SubscribeQueue(testCtx(t), []TopicFilter{{Topic: "do", QoS: 1}}, SubBuffer(2), SubDropPolicy(DropOldest))
		if err != nil {
			t.Error(err)
		}
		done <- nil
	}()
	sp := pc.read().(*packet.Subscribe)
	pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1}})
	<-done
	sendQoS1(pc, "do", 4)
	// The oldest two are dropped (and acknowledged) as 2 and 3 arrive.
	if got := fmt.Sprint(readAcks(t, pc, 2)); got != "[1 2]" {
		t.Fatalf("acks for dropped messages %s, want [1 2]", got)
	}
	ctx := testCtx(t)
	for _, want := range []string{"2", "3"} {
		m, ok := q.Pop(ctx)
		if !ok || string(m.Payload) != want {
			t.Fatalf("popped %v %q, want %s", ok, m.Payload, want)
		}
		m.Ack()
	}
	if got := fmt.Sprint(readAcks(t, pc, 2)); got != "[3 4]" {
		t.Fatalf("acks %s", got)
	}
}

// With Block, a full buffer holds the read loop until the consumer takes a message; nothing
// is lost.
func TestBlockBackpressure(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ch, _, err := subscribeVia(t, c, pc, "bl", 1, SubBuffer(1), SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	sendQoS1(pc, "bl", 5)
	for i := range 5 {
		if m := recv(t, ch); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q, want %d", m.Payload, i)
		}
	}
	if got := fmt.Sprint(readAcks(t, pc, 5)); got != "[1 2 3 4 5]" {
		t.Fatalf("acks %s", got)
	}
}

// A callback subscription runs the handler off the read loop, in order, and acknowledges
// when it returns.
func TestCallbackSubscription(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	got := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		_, err := c.SubscribeCallback(testCtx(t), []TopicFilter{{Topic: "cb", QoS: 1}}, func(m *Message) {
			got <- string(m.Payload)
		})
		done <- err
	}()
	sp := pc.read().(*packet.Subscribe)
	pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1}})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sendQoS1(pc, "cb", 3)
	for i := range 3 {
		select {
		case s := <-got:
			if s != fmt.Sprint(i) {
				t.Fatalf("callback got %q, want %d", s, i)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("callback not called")
		}
	}
	if ids := fmt.Sprint(readAcks(t, pc, 3)); ids != "[1 2 3]" {
		t.Fatalf("acks %s", ids)
	}
}

// Per-filter SUBACK results: a partial refusal keeps the granted filters live.
func TestSubscribePartialRefusal(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	type result struct {
		ch  <-chan *Message
		s   *Subscription
		err error
	}
	done := make(chan result, 1)
	go func() {
		ch, s, err := c.Subscribe(testCtx(t), []TopicFilter{{Topic: "ok", QoS: 1}, {Topic: "denied", QoS: 1}}, SubAutoAck())
		done <- result{ch, s, err}
	}()
	sp := pc.read().(*packet.Subscribe)
	pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1, packet.NotAuthorized}})
	r := <-done
	var se *SubscribeError
	if r.s == nil || !errorsAs(r.err, &se) {
		t.Fatalf("got %v %v, want a live subscription and a SubscribeError", r.s, r.err)
	}
	res := r.s.Results()
	if res[0].Err != nil || res[0].GrantedQoS != 1 || res[1].Err == nil {
		t.Fatalf("results %+v", res)
	}
	pc.send(&packet.Publish{Topic: "ok", QoS: 0, Payload: []byte("x")})
	if m := recv(t, r.ch); m.Topic != "ok" {
		t.Fatalf("got %q", m.Topic)
	}
}

// Unsubscribe sends UNSUBSCRIBE only for filters no other subscription still uses.
func TestUnsubscribeSharedFilter(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	_, s1, err := subscribeVia(t, c, pc, "same", 0)
	if err != nil {
		t.Fatal(err)
	}
	ch2, _, err := subscribeVia(t, c, pc, "same", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Unsubscribe(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if !pc.quiet(150 * time.Millisecond) {
		t.Fatal("UNSUBSCRIBE sent for a filter still in use")
	}
	pc.send(&packet.Publish{Topic: "same", Payload: []byte("still")})
	if m := recv(t, ch2); string(m.Payload) != "still" {
		t.Fatalf("got %q", m.Payload)
	}
}

func TestFlushWaitsForWrite(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ctx := testCtx(t)
	for i := range 100 {
		if err := c.Publish(ctx, PublishOptions{Topic: "f", Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		pub, ok := pc.read().(*packet.Publish)
		if !ok || string(pub.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %v", i, pub)
		}
	}
}

func TestCredentialsNeverLogged(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	h := slog.NewTextHandler(lockedWriter{&buf, &mu}, &slog.HandlerOptions{Level: slog.LevelDebug})
	p := newPeer(t)
	c, pc, cp := connectPeer(t, p, &packet.Connack{}, WithCredentials("alice-user", []byte("s3cret-pw")), WithLogger(slog.New(h)))
	if cp.Username != "alice-user" || string(cp.Password) != "s3cret-pw" {
		t.Fatalf("credentials not sent: %q %q", cp.Username, cp.Password)
	}
	pc.send(&packet.Disconnect{ReasonCode: packet.ServerShuttingDown})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Disconnect(ctx)
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(buf.String(), "s3cret") || strings.Contains(buf.String(), "alice-user") {
		t.Fatalf("credentials in the log:\n%s", buf.String())
	}
	if buf.Len() == 0 {
		t.Fatal("nothing logged: the check above proves nothing")
	}
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
