package tern

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

// WriteFailFast: a QoS 0 publish into a full write buffer returns ErrWriteQueueFull at once
// instead of waiting ("bound every buffer: block with ctx, or fail fast with a named error").
func TestWriteOverflowFailFast(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	px := faultproxy.New(t, b.Addr)
	ctx := testCtx(t)
	c := newTestClient(t, px.URL(), WithWriteBuffer(1024), WithWriteOverflowPolicy(WriteFailFast),
		WithoutKeepAlive())
	blk := newTestClient(t, px.URL(), WithWriteBuffer(1024), WithoutKeepAlive())
	px.Stall() // the broker stops reading: the kernel buffers fill, then the write buffer
	t.Cleanup(px.Resume)
	payload := make([]byte, 16<<10)
	for i := 0; ; i++ {
		err := c.Publish(ctx, PublishOptions{Topic: "overflow", Payload: payload})
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrWriteQueueFull) {
			t.Fatalf("publish %d: %v, want ErrWriteQueueFull", i, err)
		}
		break
	}
	// The default policy waits for room, bounded by ctx.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	var err error
	for err == nil {
		err = blk.Publish(short, PublishOptions{Topic: "overflow", Payload: payload})
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocking policy: %v, want the ctx's deadline", err)
	}
}

// WithCleanStartOnReconnect(true): a reconnect sends Clean Start 1, so the broker starts a
// new session (Session Present 0) although the session's expiry would have kept it.
func TestCleanStartOnReconnect(t *testing.T) {
	for _, clean := range []bool{false, true} {
		b := brokertest.StartMosquitto(t, brokertest.Config{})
		px := faultproxy.New(t, b.Addr)
		ups := make(chan *ConnackInfo, 4)
		newTestClient(t, px.URL(), WithClientID("csr"), WithCleanStart(false),
			WithSessionExpiry(time.Hour), WithCleanStartOnReconnect(clean),
			WithOnConnectionUp(func(i *ConnackInfo) { ups <- i }),
			WithReconnectBackoff(ConstantBackoff(10*time.Millisecond)))
		<-ups
		px.Cut()
		select {
		case info := <-ups:
			if info.SessionPresent == clean {
				t.Fatalf("clean start on reconnect %v: session present %v", clean, info.SessionPresent)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no reconnect")
		}
	}
}

// WithConnectUserProperties replaces the list and every CONNECT carries it.
func TestConnectUserPropertiesBulk(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	px := faultproxy.New(t, b.Addr)
	px.Record(true)
	want := []packet.UserProperty{{Key: "region", Value: "eu"}, {Key: "fleet", Value: "7"}}
	newTestClient(t, px.URL(), WithConnectUserProperty("dropped", "x"), WithConnectUserProperties(want))
	var got []packet.UserProperty
	for _, w := range decodeRecording(px.Recording()) {
		if w.Kind == packet.CONNECT {
			var cp packet.Connect
			n := 1 + packet.VBILen(len(w.Raw)-2)
			if err := cp.Decode(w.Raw[0]&0x0F, w.Raw[n:]); err != nil {
				t.Fatal(err)
			}
			got = cp.UserProperties
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("CONNECT user properties %v, want %v", got, want)
	}
	if _, err := New(WithBroker(b.URL), WithConnectUserProperties([]packet.UserProperty{{Key: "k", Value: "\xff"}})); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("invalid UTF-8 property: %v", err)
	}
}

// An exported Queue: bounded, its drop policies, ctx-bounded Push, Close.
func TestExportedQueue(t *testing.T) {
	var dropped []int
	q := NewQueue(2, DropNewest, func(v int) { dropped = append(dropped, v) })
	ctx := testCtx(t)
	for i := range 3 {
		err := q.Push(ctx, i)
		if want := i == 2; want != errors.Is(err, ErrQueueFull) {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if !slices.Equal(dropped, []int{2}) || q.Len() != 2 {
		t.Fatalf("dropped %v, len %d", dropped, q.Len())
	}

	old := NewQueue[int](2, DropOldest, nil)
	for i := range 3 {
		if err := old.Push(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := old.TryPop(); v != 1 {
		t.Fatalf("drop oldest kept %d first, want 1", v)
	}

	blk := NewQueue[int](1, Block, nil)
	blk.Push(ctx, 1)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := blk.Push(short, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("push into a full Block queue: %v", err)
	}
	got := make(chan int)
	go func() {
		v, _ := blk.Pop(ctx)
		got <- v
		v, _ = blk.Pop(ctx) // waits until the producer's Push lands
		got <- v
	}()
	if v := <-got; v != 1 {
		t.Fatalf("pop %d", v)
	}
	if err := blk.Push(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != 3 {
		t.Fatalf("pop %d", v)
	}
	blk.Close()
	if err := blk.Push(ctx, 4); !errors.Is(err, ErrQueueClosed) {
		t.Fatalf("push after close: %v", err)
	}
	if _, ok := blk.Pop(ctx); ok {
		t.Fatal("pop from a closed, empty queue")
	}
}

// The counters the reference has: server disconnects, subscribes/unsubscribes sent, live
// subscriptions, publishes in flight.
func TestStatsAdditions(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	px := faultproxy.New(t, b.Addr)
	ctx := testCtx(t)
	c := newTestClient(t, px.URL(), WithClientID("stats-add"), WithoutKeepAlive(),
		WithReconnectBackoff(ConstantBackoff(time.Hour)))
	_, s1, err := c.Subscribe(ctx, []TopicFilter{{Topic: "st/a", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "st/b", QoS: 1}}, SubAutoAck()); err != nil {
		t.Fatal(err)
	}
	if err := s1.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.SubscribesSent != 2 || st.UnsubscribesSent != 1 || st.Subscriptions != 1 {
		t.Fatalf("subscribes %d unsubscribes %d live %d, want 2 1 1", st.SubscribesSent, st.UnsubscribesSent, st.Subscriptions)
	}

	px.Stall()
	var toks []*PublishToken
	for range 3 {
		tok, err := c.PublishAsync(ctx, PublishOptions{Topic: "st/x", QoS: 1})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	if n := c.Stats().InFlight; n != 3 {
		t.Fatalf("in flight %d, want 3", n)
	}
	px.Resume()
	waitTokens(ctx, t, toks)
	if n := c.Stats().InFlight; n != 0 {
		t.Fatalf("in flight %d after the acknowledgements, want 0", n)
	}

}

// A DISCONNECT from the server is counted. Mosquitto 2.0.11 closes a taken-over connection
// without one, so a scripted peer sends it.
func TestStatsServerDisconnect(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, append(fastOpts, WithStats())...)
	pc.send(&packet.Disconnect{ReasonCode: packet.ServerShuttingDown})
	waitFor(t, func() bool { return c.Stats().ServerDisconnects == 1 })
}

// A closed queue still hands out what it buffered, however many items: Pop must not signal
// the closed ready channel (it panicked with two or more items left, e.g. a SubscribeQueue
// popped after Unsubscribe).
func TestQueuePopAfterCloseWithBacklog(t *testing.T) {
	q := NewQueue[int](4, Block, nil)
	ctx := testCtx(t)
	for i := range 3 {
		q.Push(ctx, i)
	}
	q.Close()
	for i := range 3 {
		if v, ok := q.Pop(ctx); !ok || v != i {
			t.Fatalf("pop %d: %d %v", i, v, ok)
		}
	}
	if _, ok := q.Pop(ctx); ok {
		t.Fatal("pop past the backlog")
	}
}
