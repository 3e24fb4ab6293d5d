package tern

import (
	"testing"

	"github.com/ternmq/tern/internal/brokertest"
)

// recvPayload receives one message from ch, acknowledges it and returns its payload.
func recvPayload(t *testing.T, ch <-chan *Message) string {
	t.Helper()
	m := recv(t, ch)
	m.Ack()
	return string(m.Payload)
}

// Two local subscriptions of one client to the same filter each receive every message,
// although the broker holds one subscription for the filter ([MQTT-3.8.4-3]: a second
// SUBSCRIBE replaces the first, Subscription Identifier included). Unsubscribing one keeps
// the broker subscription for the other, and its copies never reach an overlapping
// subscription twice.
func TestSameFilterTwoSubscriptions(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL)
	pub := newTestClient(t, b.URL)
	ch1, s1, err := c.Subscribe(ctx, []TopicFilter{{Topic: "same/x", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	wide, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "same/#", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ch2, s2, err := c.Subscribe(ctx, []TopicFilter{{Topic: "same/x", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(p string) {
		t.Helper()
		if err := pub.Publish(ctx, PublishOptions{Topic: "same/x", Payload: []byte(p), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	send("m1")
	for name, ch := range map[string]<-chan *Message{"first": ch1, "second": ch2, "wide": wide} {
		if got := recvPayload(t, ch); got != "m1" {
			t.Fatalf("%s subscription got %q, want m1", name, got)
		}
	}

	// The newest subscription ends; the filter stays subscribed at the broker (under the
	// identifier of the one that ended) for the first.
	if err := s2.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	send("m2")
	send("m3") // a fence: a duplicate of m2 would come before it
	for _, want := range []string{"m2", "m3"} {
		if got := recvPayload(t, ch1); got != want {
			t.Fatalf("first subscription got %q, want %s", got, want)
		}
		if got := recvPayload(t, wide); got != want {
			t.Fatalf("overlapping subscription got %q, want %s (a copy delivered twice?)", got, want)
		}
	}

	// The last user of the filter ends: now the broker forgets it, and the overlapping
	// subscription still gets exactly one copy.
	if err := s1.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	send("m4")
	send("m5")
	for _, want := range []string{"m4", "m5"} {
		if got := recvPayload(t, wide); got != want {
			t.Fatalf("overlapping subscription got %q, want %s", got, want)
		}
	}
	if st := c.Stats(); st.Unrouted != 0 {
		t.Fatalf("%d messages unrouted: the broker kept a filter nobody uses", st.Unrouted)
	}
}

// With different options for one filter, the newest SUBSCRIBE's apply at the broker to
// every local subscription of the filter (MQTT replaces the subscription), and they stay
// in force when the newest subscription ends while an older one still uses the filter.
func TestSameFilterNewestOptionsApply(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL)
	pub := newTestClient(t, b.URL)
	ch1, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "opt/x", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ch2, s2, err := c.Subscribe(ctx, []TopicFilter{{Topic: "opt/x", QoS: 0}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, PublishOptions{Topic: "opt/x", Payload: []byte("a"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan *Message{ch1, ch2} {
		m := recv(t, ch)
		if string(m.Payload) != "a" || m.QoS != 0 {
			t.Fatalf("got %q at QoS %d, want a at QoS 0 (the newest options)", m.Payload, m.QoS)
		}
		m.Ack()
	}
	if err := s2.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, PublishOptions{Topic: "opt/x", Payload: []byte("b"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch1); string(m.Payload) != "b" || m.QoS != 0 {
		t.Fatalf("got %q at QoS %d, want b at QoS 0", m.Payload, m.QoS)
	}
}
