package broker

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/cmd/tern/internal/leakcheck"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

func TestMain(m *testing.M) { leakcheck.Main(m, "ternmq/tern", "mochi-mqtt", "coder/websocket") }

func start(t *testing.T, opts Options) *Broker {
	t.Helper()
	b, err := Start("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// client connects a client with a persistent session to url.
func client(t *testing.T, ctx context.Context, url, id string, opts ...tern.Option) *tern.Client {
	t.Helper()
	c, err := tern.New(append([]tern.Option{
		tern.WithBroker(url),
		tern.WithClientID(id),
		tern.WithCleanStart(false),
		tern.WithSessionExpiry(time.Hour),
		tern.WithReconnectBackoff(tern.ConstantBackoff(10 * time.Millisecond)),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	return c
}

func publish(t *testing.T, ctx context.Context, c *tern.Client, topic string, n int, retain bool) {
	t.Helper()
	for i := range n {
		err := c.Publish(ctx, tern.PublishOptions{Topic: topic, Payload: fmt.Appendf(nil, "%d", i), QoS: 1, Retain: retain})
		if err != nil {
			t.Fatalf("publish %s #%d: %v", topic, i, err)
		}
	}
}

// receive reads n messages, acknowledging each, and returns their payloads.
func receive(t *testing.T, ctx context.Context, msgs <-chan *tern.Message, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		select {
		case m := <-msgs:
			got = append(got, string(m.Payload))
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages: %v", len(got), n, got)
		}
	}
	return got
}

// offline is a subscriber behind a proxy: cutting the proxy takes it offline while its
// client keeps the subscription and keeps trying to reconnect, so messages queue in its
// session at the broker and are routed when it comes back.
type offline struct {
	px      *faultproxy.Proxy
	addr    string
	msgs    <-chan *tern.Message
	present chan bool // SessionPresent of each connection
}

func newOffline(t *testing.T, ctx context.Context, target string) *offline {
	t.Helper()
	o := &offline{present: make(chan bool, 16)}
	o.online(t, "127.0.0.1:0", target)
	c := client(t, ctx, "mqtt://"+o.addr, "sub", tern.WithOnConnectionUp(func(i *tern.ConnackInfo) { o.present <- i.SessionPresent }))
	<-o.present
	var err error
	if o.msgs, _, err = c.Subscribe(ctx, []tern.TopicFilter{{Topic: "q/#", QoS: 1}}); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *offline) online(t *testing.T, listen, target string) {
	t.Helper()
	px, err := faultproxy.Start(listen, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	o.px, o.addr = px, px.Addr()
}

func (o *offline) goOffline() { o.px.Close() }

// comeBack reopens the proxy on the same address and waits for the client to resume its
// session.
func (o *offline) comeBack(t *testing.T, ctx context.Context, target string) {
	t.Helper()
	o.online(t, o.addr, target)
	select {
	case present := <-o.present:
		if !present {
			t.Fatal("the subscriber's session was lost")
		}
	case <-ctx.Done():
		t.Fatal("the subscriber did not reconnect")
	}
}

func distinct(t *testing.T, got []string, n int) {
	t.Helper()
	seen := map[string]bool{}
	for _, p := range got {
		seen[p] = true
	}
	if len(seen) != n {
		t.Fatalf("got %v, want %d distinct messages", got, n)
	}
}

// A restart keeps the address, sessions with their subscriptions and queued messages, and
// retained messages.
func TestRestartKeepsState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := start(t, Options{})
	addr := b.Addr()

	// Messages queue for an offline subscriber; a retained message is set.
	sub := newOffline(t, ctx, addr)
	sub.goOffline()
	ups := make(chan bool, 4)
	pub := client(t, ctx, b.URL(), "pub", tern.WithOnConnectionUp(func(i *tern.ConnackInfo) { ups <- i.SessionPresent }))
	<-ups
	publish(t, ctx, pub, "q/a", 10, false)
	publish(t, ctx, pub, "r/x", 1, true)

	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	if b.Addr() != addr {
		t.Fatalf("address after restart %s, want %s", b.Addr(), addr)
	}
	// A client connected through the restart comes back to its session by itself.
	select {
	case present := <-ups:
		if !present {
			t.Error("the publisher's session was lost by the restart")
		}
	case <-ctx.Done():
		t.Fatal("the publisher did not reconnect after the restart")
	}
	// The subscriber gets what was queued before the restart.
	sub.comeBack(t, ctx, addr)
	distinct(t, receive(t, ctx, sub.msgs, 10), 10)

	// The retained message is still there.
	fresh := client(t, ctx, b.URL(), "fresh", tern.WithCleanStart(true))
	rmsgs, _, err := fresh.Subscribe(ctx, []tern.TopicFilter{{Topic: "r/x", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ctx, rmsgs, 1); got[0] != "0" {
		t.Fatalf("retained message after restart: %q", got[0])
	}
}

// With a PersistDir the state survives Close and a new Start.
func TestPersistDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	b, err := Start("127.0.0.1:0", Options{PersistDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	sub := newOffline(t, ctx, addr)
	sub.goOffline()
	pub := client(t, ctx, b.URL(), "pub")
	publish(t, ctx, pub, "q/a", 5, false)
	pub.Disconnect(ctx)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b2, err := Start(addr, Options{PersistDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.Close() })
	sub.comeBack(t, ctx, addr)
	distinct(t, receive(t, ctx, sub.msgs, 5), 5)
}

// Close returns even when a connection never sent CONNECT: mochi's own listener would
// leave it attached to the closing server.
func TestCloseWithSilentConnection(t *testing.T) {
	b := start(t, Options{CloseGrace: 10 * time.Second})
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close is stuck on a connection that never sent CONNECT")
	}
	if n := b.StuckCloses(); n != 0 {
		t.Errorf("StuckCloses = %d, want 0", n)
	}
}

// A client that publishes QoS 1 to a topic it subscribes to and never reads makes mochi
// block: its goroutines write to that client while holding the client's lock, and its read
// loop answers each PUBLISH with a PUBACK under the same lock, so once the socket buffers
// fill, mochi stops reading the client, and mochi's Close, which writes DISCONNECT under
// that lock, never returns. Broker.Close must still return, by closing the connection
// after CloseGrace.
func TestCloseWithClientThatDoesNotRead(t *testing.T) {
	b := start(t, Options{CloseGrace: 500 * time.Millisecond})
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []byte
	out = (&packet.Connect{ClientID: "mute", CleanStart: true}).AppendTo(out)
	out = (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "mute", QoS: 1}}}).AppendTo(out)
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	// Publish until the write blocks: both directions are full and mochi no longer reads.
	payload := make([]byte, 1024)
	var id uint16
	for {
		id = id%65535 + 1
		p := packet.Publish{Topic: "mute", QoS: 1, PacketID: id, Payload: payload}
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(p.AppendTo(out[:0])); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				break
			}
			t.Fatalf("write: %v", err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close is stuck on a client that does not read")
	}
	t.Logf("mochi close stuck and forced: %d", b.StuckCloses())
}
