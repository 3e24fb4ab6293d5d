package tern

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

// expectNone checks that nothing arrives on ch within d (a negative check: it cannot fail a
// correct client).
func expectNone(t *testing.T, ch <-chan *Message, d time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected message %q %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

func TestRetained(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	pub := newTestClient(t, b.URL)
	if err := pub.Publish(ctx, PublishOptions{Topic: "ret/a", Payload: []byte("kept"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	sub := newTestClient(t, b.URL)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "ret/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch); m.Topic != "ret/a" || string(m.Payload) != "kept" || !m.Retain {
		t.Fatalf("got %q %q retain=%v", m.Topic, m.Payload, m.Retain)
	}
	// Retain handling 2: no retained message at subscribe time.
	ch2, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "ret/+", QoS: 1, RetainHandling: packet.RetainDoNotSend}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	// Retain as published: a live retained message keeps its flag only with the option.
	ch3, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "rap/x", QoS: 1, RetainAsPublished: true}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	ch4, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "rap/+", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, PublishOptions{Topic: "rap/x", Payload: []byte("r"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch3); !m.Retain {
		t.Fatal("retain-as-published subscription lost the RETAIN flag")
	}
	if m := recv(t, ch4); m.Retain {
		t.Fatal("plain subscription kept the RETAIN flag on a live message")
	}
	expectNone(t, ch2, 200*time.Millisecond)
	// Clear the retained messages so the broker's state does not leak between runs.
	pub.Publish(ctx, PublishOptions{Topic: "ret/a", QoS: 1, Retain: true})
	pub.Publish(ctx, PublishOptions{Topic: "rap/x", QoS: 1, Retain: true})
}

func TestWillOnAbnormalClose(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	watcher := newTestClient(t, b.URL)
	ch, _, err := watcher.Subscribe(ctx, []TopicFilter{{Topic: "will/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	// The client's connection goes through a net.Conn we can kill without DISCONNECT.
	var mu sync.Mutex
	var raw net.Conn
	dial := func(ctx context.Context, _ *url.URL) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", b.Addr)
		mu.Lock()
		raw = nc
		mu.Unlock()
		return nc, err
	}
	w := &packet.Will{Topic: "will/gone", Payload: []byte("bye"), QoS: 1, ContentType: "text/plain",
		UserProperties: []packet.UserProperty{{Key: "k", Value: "v"}}}
	c := newTestClient(t, b.URL, WithDialFunc(dial), WithWill(w), WithClientID("will-client"),
		WithOnConnectionDown(func(error) bool { return false }))
	_ = c
	mu.Lock()
	raw.Close()
	mu.Unlock()
	m := recv(t, ch)
	if m.Topic != "will/gone" || string(m.Payload) != "bye" || m.ContentType != "text/plain" ||
		len(m.UserProperties) != 1 || m.UserProperties[0].Key != "k" {
		t.Fatalf("will: %+v", m)
	}
}

func TestNoLocal(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL)
	local, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "nl/t", QoS: 1, NoLocal: true}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	other := newTestClient(t, b.URL)
	if err := c.Publish(ctx, PublishOptions{Topic: "nl/t", Payload: []byte("mine"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := other.Publish(ctx, PublishOptions{Topic: "nl/t", Payload: []byte("theirs"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, local); string(m.Payload) != "theirs" {
		t.Fatalf("no-local subscription received its own message %q", m.Payload)
	}
}

func TestSharedSubscription(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	var chans []<-chan *Message
	for range 2 {
		c := newTestClient(t, b.URL)
		ch, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "$share/grp/sh/#", QoS: 1}}, SubAutoAck())
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	pub := newTestClient(t, b.URL)
	const n = 20
	for i := range n {
		if err := pub.Publish(ctx, PublishOptions{Topic: "sh/x", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	counts := [2]int{}
	for len(seen) < n {
		select {
		case m := <-chans[0]:
			seen[string(m.Payload)]++
			counts[0]++
		case m := <-chans[1]:
			seen[string(m.Payload)]++
			counts[1]++
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d", len(seen), n)
		}
	}
	for k, v := range seen {
		if v != 1 {
			t.Fatalf("message %s delivered %d times to the group", k, v)
		}
	}
	if counts[0] == 0 || counts[1] == 0 {
		t.Fatalf("shared subscription did not spread messages: %v", counts)
	}
}

func TestSubscriptionIdentifiers(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL)
	ch1, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "sid/#", QoS: 1}}, SubIdentifier(11), SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	ch2, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "sid/+/x", QoS: 1}}, SubIdentifier(22), SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, PublishOptions{Topic: "sid/a/x", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// Mosquitto sends one copy per matching subscription, each with its identifier: each
	// subscription must get exactly its own copy.
	m1, m2 := recv(t, ch1), recv(t, ch2)
	if fmt.Sprint(m1.SubscriptionIDs) != "[11]" || fmt.Sprint(m2.SubscriptionIDs) != "[22]" {
		t.Fatalf("subscription identifiers %v and %v, want [11] and [22]", m1.SubscriptionIDs, m2.SubscriptionIDs)
	}
	expectNone(t, ch1, 100*time.Millisecond)
	expectNone(t, ch2, 100*time.Millisecond)
	// Without explicit identifiers the client picks its own, with the same effect.
	ch3, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "auto/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	ch4, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "auto/+", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, PublishOptions{Topic: "auto/a", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	recv(t, ch3)
	recv(t, ch4)
	expectNone(t, ch3, 100*time.Millisecond)
	expectNone(t, ch4, 100*time.Millisecond)
}

func TestOutboundTopicAliases(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	sub := newTestClient(t, b.URL)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "ta/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	pub := newTestClient(t, b.URL, WithTopicAliases(true))
	if pub.Info().TopicAliasMaximum == 0 {
		t.Skip("broker grants no topic aliases")
	}
	topics := []string{"ta/one", "ta/two", "ta/one", "ta/one", "ta/two"}
	for i, topic := range topics {
		q := byte(i % 2)
		if err := pub.Publish(ctx, PublishOptions{Topic: topic, Payload: []byte(fmt.Sprint(i)), QoS: q}); err != nil {
			t.Fatal(err)
		}
	}
	for i, topic := range topics {
		if m := recv(t, ch); m.Topic != topic || string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q %q, want %q", i, m.Topic, m.Payload, topic)
		}
	}
}

// Against max_inflight_messages 5 the client never has more than 5 QoS 1 publishes
// unacknowledged, and fills the window.
func TestReceiveMaximumWindow(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{MaxInflight: 5})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL)
	if got := c.Info().ReceiveMaximum; got != 5 {
		t.Fatalf("broker granted receive maximum %d, want 5", got)
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if err := c.Publish(ctx, PublishOptions{Topic: "win", QoS: 1, Payload: []byte(fmt.Sprint(g, i))}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.mu.Lock()
	high := c.inUseHigh
	c.mu.Unlock()
	if high != 5 {
		t.Fatalf("highest number of publishes in flight %d, want exactly 5", high)
	}
	if s := c.Stats(); s.ConnectionLost != 0 || s.PublishAcked != 400 {
		t.Fatalf("stats %+v", s)
	}
}

// Bad input gets a named error and nothing reaches the broker.
func TestBadInputNothingSent(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ctx := testCtx(t)
	bad := []struct {
		name string
		err  error
		want error
	}{
		{"empty topic", c.Publish(ctx, PublishOptions{Topic: ""}), ErrInvalidTopic},
		{"wildcard topic", c.Publish(ctx, PublishOptions{Topic: "a/+"}), ErrInvalidTopic},
		{"bad utf8 topic", c.Publish(ctx, PublishOptions{Topic: "a\xff"}), ErrInvalidTopic},
		{"nul topic", c.Publish(ctx, PublishOptions{Topic: "a\x00b"}), ErrInvalidTopic},
		{"qos 3", c.Publish(ctx, PublishOptions{Topic: "a", QoS: 3}), ErrInvalidMessage},
		{"bad content type", c.Publish(ctx, PublishOptions{Topic: "a", ContentType: "\xff"}), ErrInvalidMessage},
		{"bad user property", c.Publish(ctx, PublishOptions{Topic: "a", UserProperties: []packet.UserProperty{{Key: "\x00"}}}), ErrInvalidMessage},
		{"bad payload format", c.Publish(ctx, PublishOptions{Topic: "a", PayloadFormat: 2}), ErrInvalidMessage},
		{"bad filter", subErr(c, "a/#/b"), ErrInvalidTopic},
		{"bad share", subErr(c, "$share//a"), ErrInvalidTopic},
		{"empty filter", subErr(c, ""), ErrInvalidTopic},
		{"no-local shared", func() error {
			_, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "$share/g/a", NoLocal: true}})
			return err
		}(), ErrInvalidTopic},
		{"sub qos 3", func() error {
			_, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "a", QoS: 3}})
			return err
		}(), ErrInvalidOption},
	}
	for _, b := range bad {
		if !errors.Is(b.err, b.want) {
			t.Errorf("%s: got %v, want %v", b.name, b.err, b.want)
		}
	}
	if !pc.quiet(200 * time.Millisecond) {
		t.Fatal("invalid input reached the wire")
	}
}

func TestNewValidatesOptions(t *testing.T) {
	cases := []struct {
		name string
		opts []Option
	}{
		{"no broker", nil},
		{"bad scheme", []Option{WithBroker("http://x")}},
		{"no host", []Option{WithBroker("mqtt://")}},
		{"bad url", []Option{WithBroker("mqtt://[::1")}},
		{"keepalive", []Option{WithBroker("mqtt://x"), WithKeepAlive(time.Millisecond)}},
		{"receive max", []Option{WithBroker("mqtt://x"), WithReceiveMaximum(0)}},
		{"client id", []Option{WithBroker("mqtt://x"), WithClientID("a\x00")}},
		{"will topic", []Option{WithBroker("mqtt://x"), WithWill(&packet.Will{Topic: "a/#"})}},
		{"persistent session without id", []Option{WithBroker("mqtt://x"), WithCleanStart(false), WithSessionExpiry(time.Hour)}},
		{"buffer", []Option{WithBroker("mqtt://x"), WithMaxSubscribeQueueSize(0)}},
		{"write buffer", []Option{WithBroker("mqtt://x"), WithWriteBuffer(1)}},
	}
	for _, tc := range cases {
		if _, err := New(tc.opts...); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: got %v, want ErrInvalidOption", tc.name, err)
		}
	}
}
