package tern

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ternmq/tern/codec/json"
	"github.com/ternmq/tern/internal/brokertest"
)

// Typed messages on a client that speaks MQTT 3.1.1: the codec's Content Type is a
// convenience of MQTT 5, not something the caller asked for, so it must not make every typed
// publish fail with ErrNotInV311. A Content Type the caller sets is still refused (never
// dropped silently). Against Mosquitto in 3.1.1 mode, byte-exact JSON.
func TestTypedOverV311(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL, v311Opts("typed-v311")...)
	typ := NewTyped(c, json.Codec[reading]{})
	ch, _, err := typ.Subscribe(ctx, []TopicFilter{{Topic: "typed311/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	want := reading{Device: "d1", Temp: 21.5}
	if err := typ.Publish(ctx, PublishOptions{Topic: "typed311/a", QoS: 1}, want); err != nil {
		t.Fatalf("typed publish on 3.1.1: %v", err)
	}
	m := recvTyped(t, ch)
	if m.Err != nil || m.Value != want {
		t.Fatalf("got %+v (err %v), want %+v", m.Value, m.Err, want)
	}
	if m.ContentType != "" {
		t.Fatalf("a 3.1.1 message carries Content Type %q", m.ContentType)
	}
	err = typ.Publish(ctx, PublishOptions{Topic: "typed311/b", QoS: 1, ContentType: "application/x"}, want)
	if !errors.Is(err, ErrNotInV311) {
		t.Fatalf("caller's Content Type on 3.1.1: err %v, want ErrNotInV311", err)
	}
	requireP2(t, b, "typed-v311")
}

// NewTypedQueued over a 3.1.1 client: the value is queued and delivered.
func TestTypedQueuedOverV311(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL, v311Opts("typedq-v311")...)
	qp, err := NewQueuePublisher(c, NewMemoryQueue())
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close(context.Background())
	typ := NewTypedQueued(qp, json.Codec[reading]{})
	sub := newTestClient(t, b.URL, v311Opts("typedq-v311-sub")...)
	ch, _, err := NewTyped(sub, json.Codec[reading]{}).Subscribe(ctx,
		[]TopicFilter{{Topic: "typedq311", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	want := reading{Device: "q", Temp: -3}
	if err := typ.Publish(ctx, PublishOptions{Topic: "typedq311", QoS: 1}, want); err != nil {
		t.Fatalf("queued typed publish on 3.1.1: %v", err)
	}
	if m := recvTyped(t, ch); m.Err != nil || m.Value != want {
		t.Fatalf("got %+v (err %v)", m.Value, m.Err)
	}
}

// A queued message that a 3.1.1 client can never send (it carries a property: queued by an
// MQTT 5 process on the same durable queue, or added to the queue directly) is set aside,
// not retried forever: "poison messages set aside, never retried forever" (PRODUCT.md).
func TestQueuedPropertiesOnV311SetAside(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	q := NewMemoryQueue()
	// Written to the queue as an MQTT 5 process would have left it.
	if err := q.Enqueue(ctx, &QueueEntry{Message: PublishOptions{Topic: "poison311", QoS: 1,
		Payload: []byte("p"), ContentType: "text/plain"}}); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, &QueueEntry{Message: PublishOptions{Topic: "poison311", QoS: 1,
		Payload: []byte("ok")}}); err != nil {
		t.Fatal(err)
	}
	dead := make(chan error, 2)
	c := newTestClient(t, b.URL, v311Opts("poison-v311")...)
	sub := newTestClient(t, b.URL, v311Opts("poison-v311-sub")...)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "poison311", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	qp, err := NewQueuePublisher(c, q, WithDeadLetter(func(_ QueueEntry, err error) { dead <- err }),
		WithQueueRetryBackoff(ConstantBackoff(10*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close(context.Background())
	select {
	case err := <-dead:
		if !errors.Is(err, ErrNotInV311) {
			t.Fatalf("set aside with %v, want ErrNotInV311", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the 5-only message was not set aside; queue stats %+v", qp.Stats())
	}
	if m := recv(t, ch); string(m.Payload) != "ok" {
		t.Fatalf("got %q, want the message behind it", m.Payload)
	}
}
