package tern

import (
	"context"
	stdjson "encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/codec/json"
	"github.com/ternmq/tern/internal/brokertest"
)

type reading struct {
	Device string  `json:"device"`
	Temp   float64 `json:"temp"`
}

func recvTyped[T any](t *testing.T, ch <-chan *TypedMessage[T]) *TypedMessage[T] {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("typed subscription closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no typed message within 10s")
	}
	return nil
}

// wantDecodeError checks that m carries the decode failure of a JSON codec.
func wantDecodeError[T any](t *testing.T, m *TypedMessage[T]) {
	t.Helper()
	var syn *stdjson.SyntaxError
	if !errors.Is(m.Err, ErrDecode) || !errors.As(m.Err, &syn) {
		t.Fatalf("got err %v, want ErrDecode wrapping a *json.SyntaxError", m.Err)
	}
}

// Values go out encoded with the codec's Content Type, unless the caller set one, and come
// back decoded through each of the three subscribe forms.
func TestTypedRoundTrip(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL)
	typ := NewTyped(c, json.Codec[reading]{})

	ch, _, err := typ.Subscribe(ctx, []TopicFilter{{Topic: "typed/ch", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	q, _, err := typ.SubscribeQueue(ctx, []TopicFilter{{Topic: "typed/q", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	cb := make(chan *TypedMessage[reading], 1)
	if _, err := typ.SubscribeCallback(ctx, []TopicFilter{{Topic: "typed/cb", QoS: 1}},
		func(m *TypedMessage[reading]) { cb <- m }); err != nil {
		t.Fatal(err)
	}

	want := reading{Device: "a1", Temp: 21.5}
	for _, topic := range []string{"typed/ch", "typed/q", "typed/cb"} {
		if err := typ.Publish(ctx, PublishOptions{Topic: topic, QoS: 1}, want); err != nil {
			t.Fatal(err)
		}
	}
	m := recvTyped(t, ch)
	m.Ack()
	qm, ok := q.Pop(ctx)
	if !ok {
		t.Fatal("queue: no message")
	}
	qm.Ack()
	cm := recvTyped(t, cb)
	for _, got := range []*TypedMessage[reading]{m, qm, cm} {
		if got.Err != nil || got.Value != want {
			t.Fatalf("%s: got %+v err %v, want %+v", got.Topic, got.Value, got.Err, want)
		}
		if got.ContentType != json.ContentType {
			t.Fatalf("%s: content type %q, want %q", got.Topic, got.ContentType, json.ContentType)
		}
	}

	// A Content Type the caller chose is kept.
	if err := typ.Publish(ctx, PublishOptions{Topic: "typed/ch", QoS: 1, ContentType: "application/vnd.reading+json"}, want); err != nil {
		t.Fatal(err)
	}
	if m := recvTyped(t, ch); m.ContentType != "application/vnd.reading+json" || m.Value != want {
		t.Fatalf("got content type %q value %+v", m.ContentType, m.Value)
	} else {
		m.Ack()
	}
}

// A payload the codec cannot decode reaches the consumer as an error on that message, and the
// subscription goes on to deliver the next one, in every form.
func TestTypedDecodeFailureContinues(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL)
	typ := NewTyped(c, json.Codec[reading]{})
	ch, _, err := typ.Subscribe(ctx, []TopicFilter{{Topic: "bad/ch", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	q, _, err := typ.SubscribeQueue(ctx, []TopicFilter{{Topic: "bad/q", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	cb := make(chan *TypedMessage[reading], 2)
	if _, err := typ.SubscribeCallback(ctx, []TopicFilter{{Topic: "bad/cb", QoS: 1}},
		func(m *TypedMessage[reading]) { cb <- m }); err != nil {
		t.Fatal(err)
	}
	want := reading{Device: "ok", Temp: 1}
	for _, topic := range []string{"bad/ch", "bad/q", "bad/cb"} {
		if err := c.Publish(ctx, PublishOptions{Topic: topic, QoS: 1, Payload: []byte("{not json")}); err != nil {
			t.Fatal(err)
		}
		if err := typ.Publish(ctx, PublishOptions{Topic: topic, QoS: 1}, want); err != nil {
			t.Fatal(err)
		}
	}
	pop := func() *TypedMessage[reading] {
		m, ok := q.Pop(ctx)
		if !ok {
			t.Fatal("queue: no message")
		}
		return m
	}
	for _, form := range []struct {
		name string
		next func() *TypedMessage[reading]
	}{
		{"channel", func() *TypedMessage[reading] { return recvTyped(t, ch) }},
		{"queue", pop},
		{"callback", func() *TypedMessage[reading] { return recvTyped(t, cb) }},
	} {
		bad := form.next()
		wantDecodeError(t, bad)
		if string(bad.Payload) != "{not json" {
			t.Fatalf("%s: bad message payload %q", form.name, bad.Payload)
		}
		if good := form.next(); good.Err != nil || good.Value != want {
			t.Fatalf("%s: after a decode failure got %+v err %v", form.name, good.Value, good.Err)
		}
	}
}

// An undecodable message is acknowledged like any other of its subscription: manual Ack on
// the channel form, on return from the callback. A resumed session gets neither back.
func TestTypedDecodeFailureAcknowledged(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	pub := newTestClient(t, b.URL)
	session := []Option{WithClientID("typed-ack"), WithCleanStart(false), WithSessionExpiry(time.Hour)}

	sub := newTestClient(t, b.URL, session...)
	typ := NewTyped(sub, json.Codec[reading]{})
	ch, _, err := typ.Subscribe(ctx, []TopicFilter{{Topic: "tack/ch", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	cb := make(chan *TypedMessage[reading], 1)
	if _, err := typ.SubscribeCallback(ctx, []TopicFilter{{Topic: "tack/cb", QoS: 1}},
		func(m *TypedMessage[reading]) { cb <- m }); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"tack/ch", "tack/cb"} {
		if err := pub.Publish(ctx, PublishOptions{Topic: topic, QoS: 1, Payload: []byte("nope")}); err != nil {
			t.Fatal(err)
		}
	}
	m := recvTyped(t, ch)
	wantDecodeError(t, m)
	m.Ack()
	wantDecodeError(t, recvTyped(t, cb))
	// The callback's message is acknowledged once the callback has returned, which may be
	// after the receive above: wait for both acknowledgements before leaving.
	waitFor(t, func() bool { return sub.Stats().AcksSent == 2 })
	if err := sub.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	// Mosquitto may take the next connection's CONNECT before it reads this one's last
	// PUBACK and DISCONNECT: wait until it has seen the DISCONNECT.
	waitFor(t, func() bool { return strings.Contains(b.Log(), "Client typed-ack disconnected.") })

	// The same session again: an unacknowledged message would be sent again now.
	again, err := New(append([]Option{WithBroker(b.URL)}, session...)...)
	if err != nil {
		t.Fatal(err)
	}
	all, allSub, err := again.Subscribe(ctx, []TopicFilter{{Topic: "tack/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer again.Disconnect(context.Background())
	if err := allSub.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, PublishOptions{Topic: "tack/end", QoS: 1, Payload: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, all); m.Topic != "tack/end" {
		t.Fatalf("session resumed with %q %q: the undecodable message was not acknowledged", m.Topic, m.Payload)
	}
}

// Ending a typed channel subscription whose consumer stopped reading closes the channel,
// stops its goroutine and acknowledges what was left, so the broker's window stays open.
func TestTypedChannelEndsWithUnreadMessages(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL, WithReceiveMaximum(2))
	typ := NewTyped(c, json.Codec[reading]{})
	ch, s, err := typ.Subscribe(ctx, []TopicFilter{{Topic: "unread/a", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := typ.Publish(ctx, PublishOptions{Topic: "unread/a", QoS: 1}, reading{Temp: float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The first is held by the subscription's goroutine; wait until the second is buffered.
	waitFor(t, func() bool { return s.q.Len() == 1 })
	if err := s.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	// With two messages left unacknowledged, the broker would send nothing more: the client's
	// Receive Maximum is 2.
	next, _, err := typ.Subscribe(ctx, []TopicFilter{{Topic: "unread/b", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := typ.Publish(ctx, PublishOptions{Topic: "unread/b", QoS: 1}, reading{Device: "b"}); err != nil {
		t.Fatal(err)
	}
	if m := recvTyped(t, next); m.Value.Device != "b" {
		t.Fatalf("got %+v", m.Value)
	}
	// Nobody took the two: the channel has nothing more to give, and is closed.
	waitFor(t, func() bool {
		select {
		case m, ok := <-ch:
			if ok {
				t.Fatalf("message %+v delivered after the subscription ended", m.Value)
			}
			return true
		default:
			return false
		}
	})
}

// Typed over a QueuePublisher stores the encoded value; the drain sends it with the codec's
// Content Type.
func TestTypedQueued(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL)
	p, err := NewQueuePublisher(c, NewMemoryQueue())
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, p)
	typ := NewTypedQueued(p, json.Codec[reading]{})
	ch, _, err := typ.Subscribe(ctx, []TopicFilter{{Topic: "tq/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := typ.Publish(ctx, PublishOptions{Topic: "tq/a", QoS: 0}, reading{}); !errors.Is(err, ErrQueueQoS0) {
		t.Fatalf("QoS 0 through the queue: %v, want ErrQueueQoS0", err)
	}
	want := reading{Device: "q", Temp: 3}
	if err := typ.Publish(ctx, PublishOptions{Topic: "tq/a", QoS: 1}, want); err != nil {
		t.Fatal(err)
	}
	if m := recvTyped(t, ch); m.Value != want || m.ContentType != json.ContentType {
		t.Fatalf("got %+v content type %q", m.Value, m.ContentType)
	}
}

// An encoding failure is returned and nothing is sent.
func TestTypedEncodeFailure(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	c := newTestClient(t, b.URL)
	typ := NewTyped(c, json.Codec[func()]{})
	var unsupported *stdjson.UnsupportedTypeError
	if err := typ.Publish(testCtx(t), PublishOptions{Topic: "enc/x", QoS: 1}, func() {}); !errors.As(err, &unsupported) {
		t.Fatalf("got %v, want the codec's error", err)
	}
}

// The typed layer's own cost per received message: one TypedMessage plus what the codec
// allocates (compare with codec/json's BenchmarkDecode).
func BenchmarkTypedWrapJSON(b *testing.B) {
	typ := NewTyped(nil, json.Codec[reading]{})
	m := &Message{Topic: "sensors/a1", Payload: []byte(`{"device":"sensor-0042","temp":21.5}`)}
	b.ReportAllocs()
	for b.Loop() {
		if tm := typ.wrap(m); tm.Err != nil {
			b.Fatal(tm.Err)
		}
	}
}
