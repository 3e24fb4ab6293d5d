package tern

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// A group member with a persistent session: messages the member received but the application
// never took (still in the member's buffer, or on their way into the merged stream) must not
// be acknowledged by ClientGroup.Disconnect. "Nothing queued or acknowledged is ever lost":
// the broker keeps them for the session, and the next process that resumes it gets them,
// exactly as with a plain Client's Disconnect.
func TestGroupDisconnectKeepsUnseenForSession(t *testing.T) {
	for _, form := range []string{"channel", "queue", "callback"} {
		t.Run(form, func(t *testing.T) { testGroupDisconnectKeepsUnseen(t, form) })
	}
}

func testGroupDisconnectKeepsUnseen(t *testing.T, form string) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	const n = 20
	id := "grp-sess-" + form
	g, err := NewClientGroup([]GroupMember{{Name: "m", Options: []Option{WithBroker(b.URL),
		WithClientID(id), WithSessionExpiry(time.Hour), WithStats()}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	filters := []TopicFilter{{Topic: "grp/sess", QoS: 1}}
	var full func() bool
	block := make(chan struct{})
	defer close(block)
	switch form {
	case "channel":
		ch, _, err := g.Subscribe(ctx, filters, SubBuffer(5))
		if err != nil {
			t.Fatal(err)
		}
		full = func() bool { return len(ch) == cap(ch) }
	case "queue":
		q, _, err := g.SubscribeQueue(ctx, filters, SubBuffer(5))
		if err != nil {
			t.Fatal(err)
		}
		full = func() bool { return q.Len() == q.Cap() }
	case "callback":
		// The callback takes the first message and stays in it until the group is gone;
		// it acknowledges nothing, so the broker must redeliver that one too.
		started := make(chan struct{}, 1)
		if _, err := g.SubscribeCallback(ctx, filters, func(*Message) {
			select {
			case started <- struct{}{}:
			default:
			}
			<-block
		}, SubBuffer(5), SubManualAck()); err != nil {
			t.Fatal(err)
		}
		full = func() bool {
			select {
			case <-started:
				started <- struct{}{}
				return true
			default:
				return false
			}
		}
	}
	pub := newTestClient(t, b.URL)
	for i := range n {
		if err := pub.Publish(ctx, PublishOptions{Topic: "grp/sess", QoS: 1, Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	m := g.Member("m")
	waitCond(t, 10*time.Second, "member received every message, merged stream full", func() bool {
		return m.Stats().Received >= n && full()
	})
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if form == "callback" {
		// The blocked callback is reported, not waited for.
		g.Disconnect(dctx)
	} else if err := g.Disconnect(dctx); err != nil {
		t.Fatal(err)
	}

	// A new process resumes the member's session.
	ch := resumeMember(t, ctx, b.URL, id, filters)
	seen := make(map[string]bool)
	timeout := time.After(5 * time.Second)
	for len(seen) < n {
		select {
		case msg := <-ch:
			seen[string(msg.Payload)] = true
		case <-timeout:
			t.Fatalf("the resumed session redelivered %d of the %d messages the application never took", len(seen), n)
		}
	}
}

// The same promise while the application keeps up: it takes and acknowledges every message it
// gets while Disconnect runs in the middle of the stream. What it took plus what the resumed
// session redelivers must be every message. (Before the fix, a message the merging goroutine
// held at that moment was acknowledged unseen whenever everything before it was acknowledged.)
func TestGroupDisconnectMidStreamLosesNothing(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{MaxInflight: 100})
	ctx := testCtx(t)
	const n = 3000
	id := "grp-mid"
	g, err := NewClientGroup([]GroupMember{{Name: "m", Options: []Option{WithBroker(b.URL),
		WithClientID(id), WithSessionExpiry(time.Hour), WithStats()}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	filters := []TopicFilter{{Topic: "grp/mid", QoS: 1}}
	ch, _, err := g.Subscribe(ctx, filters, SubBuffer(1))
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool)
	half := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			seen[string(m.Payload)] = true
			m.Ack()
			if len(seen) == n/3 {
				close(half)
			}
		}
	}()
	pub := newTestClient(t, b.URL)
	go func() {
		for i := range n {
			pub.PublishAsync(ctx, PublishOptions{Topic: "grp/mid", QoS: 1, Payload: fmt.Appendf(nil, "%d", i)})
		}
	}()
	select {
	case <-half:
	case <-ctx.Done():
		t.Fatal("no third of the messages arrived")
	}
	if err := g.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	rch := resumeMember(t, ctx, b.URL, id, filters)
	defer func() {
		if len(seen) < n {
			t.Logf("%d of %d messages seen or redelivered", len(seen), n)
		}
	}()
	waitCond(t, 20*time.Second, "every message seen or redelivered", func() bool {
		for {
			select {
			case m := <-rch:
				seen[string(m.Payload)] = true
				continue
			default:
			}
			break
		}
		return len(seen) == n
	})
}

// resumeMember is a new process resuming a group member's persistent session id at url,
// its subscription (auto-acknowledged) in place before CONNACK; disconnected at the end of
// the test.
func resumeMember(t *testing.T, ctx context.Context, url, id string, filters []TopicFilter) <-chan *Message {
	t.Helper()
	c, err := New(WithBroker(url), WithClientID(id), WithCleanStart(false), WithSessionExpiry(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ch, _, err := c.Subscribe(ctx, filters, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	return ch
}
