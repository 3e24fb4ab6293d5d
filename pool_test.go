package tern

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/ternmq/tern/internal/brokertest"
)

// poolMembers returns c's pool members once every one is connected.
func poolMembers(t *testing.T, c *Client) []*Client {
	t.Helper()
	p := c.pool.Load()
	if p == nil {
		t.Fatal("no pool")
	}
	waitFor(t, func() bool {
		for _, m := range p.members {
			if !m.Connected() {
				return false
			}
		}
		return true
	})
	return p.members
}

// Round robin spreads QoS 0, 1 and 2 publishes over the members; member ids derive from the
// parent's; every message arrives.
func TestPoolRoundRobin(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	sub := newTestClient(t, b.URL)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "pool/#", QoS: 2}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, b.URL, WithClientID("par"), WithPublisherPool(3))
	ms := poolMembers(t, c)
	for i, m := range ms {
		if want := "par-pub-" + strconv.Itoa(i+1); m.ClientID() != want {
			t.Fatalf("member %d id %q, want %q", i+1, m.ClientID(), want)
		}
	}
	for i := range 9 {
		if err := c.Publish(ctx, PublishOptions{Topic: "pool/x", QoS: byte(i % 3), Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	c.Flush(ctx)
	for range 9 {
		recv(t, ch)
	}
	for i, m := range ms {
		if n := m.Stats().PublishSent; n != 3 {
			t.Fatalf("member %d sent %d, want 3", i+1, n)
		}
	}
	// The parent's counters include the members': 9 publishes sent, 6 of them QoS 1/2
	// acknowledged, over 1 + 3 connections.
	st := c.Stats()
	if st.PoolPublishes != 9 || st.PoolFallbacks != 0 || st.PublishSent != 9 || st.PublishAcked != 6 || st.Connects != 4 {
		t.Fatalf("parent stats %+v", st)
	}
}

// Hash by topic: every message of a topic goes through one member, so per-topic order holds
// with many messages in flight.
func TestPoolHashByTopicOrder(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	sub := newTestClient(t, b.URL)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "ord/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, b.URL, WithClientID("hpar"), WithPublisherPool(4),
		WithPublisherPoolRouting(PoolHashByTopic))
	ms := poolMembers(t, c)
	const topics, per = 5, 100
	var toks []*PublishToken
	for i := range per {
		for k := range topics {
			tok, err := c.PublishAsync(ctx, PublishOptions{Topic: "ord/" + strconv.Itoa(k), QoS: 1,
				Payload: []byte(strconv.Itoa(i))})
			if err != nil {
				t.Fatal(err)
			}
			toks = append(toks, tok)
		}
	}
	waitTokens(ctx, t, toks)
	next := make(map[string]int)
	for range topics * per {
		m := recv(t, ch)
		if got := string(m.Payload); got != strconv.Itoa(next[m.Topic]) {
			t.Fatalf("topic %s: got %s, want %d", m.Topic, got, next[m.Topic])
		}
		next[m.Topic]++
	}
	var senders int
	for _, m := range ms {
		if n := m.Stats().PublishSent; n > 0 {
			senders++
			if n%per != 0 {
				t.Fatalf("a member sent %d: a topic was split", n)
			}
		}
	}
	if senders < 2 {
		t.Fatalf("%d members carried the traffic", senders)
	}
}

// Least in flight picks the member with the fewest unacknowledged publishes.
func TestPoolLeastInFlight(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	c := newTestClient(t, b.URL, WithClientID("lpar"), WithPublisherPool(2),
		WithPublisherPoolRouting(PoolLeastInFlight))
	ms := poolMembers(t, c)
	// Member 1 looks busy: its window holds places no publish will free.
	ms[0].mu.Lock()
	ms[0].inUse += 5
	ms[0].mu.Unlock()
	defer func() {
		ms[0].mu.Lock()
		ms[0].inUse -= 5
		ms[0].mu.Unlock()
	}()
	for range 4 {
		if err := c.Publish(ctx, PublishOptions{Topic: "lif/x", QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := ms[0].Stats().PublishSent, ms[1].Stats().PublishSent; a != 0 || b != 4 {
		t.Fatalf("busy member sent %d, idle one %d; want 0 and 4", a, b)
	}
}

// With every member down, publishes go to the main connection, and PoolFallbacks says so.
func TestPoolFallback(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	sub := newTestClient(t, b.URL)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "fb/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	// Only the first dial, the main connection's, reaches the broker.
	var dials atomic.Int32
	refuse := errors.New("refused by the test")
	dial := func(ctx context.Context, u *url.URL) (net.Conn, error) {
		if dials.Add(1) > 1 {
			return nil, refuse
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", u.Host)
	}
	c := newTestClient(t, b.URL, WithPublisherPool(2), WithDialFunc(dial))
	waitFor(t, func() bool { return dials.Load() >= 3 }) // both members tried and failed
	if err := c.Publish(ctx, PublishOptions{Topic: "fb/x", QoS: 1, Payload: []byte("main")}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch); string(m.Payload) != "main" {
		t.Fatalf("got %q", m.Payload)
	}
	if st := c.Stats(); st.PoolFallbacks != 1 || st.PublishAcked != 1 {
		t.Fatalf("fallbacks %d acked %d, want 1 1", st.PoolFallbacks, st.PublishAcked)
	}
}
