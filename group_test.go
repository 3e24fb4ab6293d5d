package tern

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// newTestGroup makes a group of one member per broker URL, named a, b, ..., sharing a client
// id that the group must make unique, and connects it.
func newTestGroup(t *testing.T, urls []string, opts ...GroupOption) *ClientGroup {
	t.Helper()
	var ms []GroupMember
	for i, u := range urls {
		ms = append(ms, GroupMember{Name: string(rune('a' + i)), Options: []Option{WithBroker(u)}})
	}
	opts = append([]GroupOption{WithGroupOptions(WithClientID("grp"), WithStats())}, opts...)
	g, err := NewClientGroup(ms, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.Disconnect(ctx)
	})
	return g
}

func twoBrokers(t *testing.T) (*brokertest.Mosquitto, *brokertest.Mosquitto) {
	return brokertest.StartMosquitto(t, brokertest.Config{}), brokertest.StartMosquitto(t, brokertest.Config{})
}

// recvFrom collects n messages from ch and counts them by member.
func recvFrom(t *testing.T, ch <-chan *Message, n int) map[string][]*Message {
	t.Helper()
	got := make(map[string][]*Message)
	for range n {
		m := recv(t, ch)
		if m.Client() == nil {
			t.Fatal("message without its client")
		}
		got[m.Member()] = append(got[m.Member()], m)
		m.Ack()
	}
	return got
}

// Broadcast reaches every member; the merged stream says which member each message came
// from; duplicate client ids are made unique.
func TestGroupBroadcastMerged(t *testing.T) {
	ba, bb := twoBrokers(t)
	g := newTestGroup(t, []string{ba.URL, bb.URL})
	if a, b := g.Member("a").ClientID(), g.Member("b").ClientID(); a != "grp" || b != "grp-2" {
		t.Fatalf("client ids %q %q, want grp grp-2", a, b)
	}
	if fmt.Sprint(g.Names()) != "[a b]" || len(g.Members()) != 2 || g.Member("c") != nil {
		t.Fatalf("names %v", g.Names())
	}
	ctx := testCtx(t)
	ch, gs, err := g.Subscribe(ctx, []TopicFilter{{Topic: "grp/#", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if gs.Member("a") == nil || gs.Member("b") == nil {
		t.Fatal("subscription missing a member's part")
	}
	if err := g.Publish(ctx, PublishOptions{Topic: "grp/x", Payload: []byte("1"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	got := recvFrom(t, ch, 2)
	for _, name := range []string{"a", "b"} {
		if len(got[name]) != 1 || got[name][0].Client() != g.Member(name) {
			t.Fatalf("member %s: %d messages", name, len(got[name]))
		}
	}
}

// Broadcast returns when all succeed; its error names each member that failed and only
// those.
func TestGroupBroadcastNamesFailures(t *testing.T) {
	ba, bb := twoBrokers(t)
	g := newTestGroup(t, []string{ba.URL, bb.URL})
	bb.Stop()
	waitFor(t, func() bool { return !g.Member("b").Connected() })
	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	err := g.Publish(ctx, PublishOptions{Topic: "grp/x", QoS: 1})
	var ge *GroupError
	if !errors.As(err, &ge) || len(ge.Errs) != 1 || ge.Errs["b"] == nil {
		t.Fatalf("broadcast with b down: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error does not carry b's cause: %v", err)
	}
}

// Round robin alternates members; hash by topic always sends a topic to the same member.
func TestGroupRoundRobinAndHash(t *testing.T) {
	ba, bb := twoBrokers(t)
	ctx := testCtx(t)
	rr := newTestGroup(t, []string{ba.URL, bb.URL}, WithGroupPublishPolicy(GroupRoundRobin))
	ch, _, err := rr.Subscribe(ctx, []TopicFilter{{Topic: "rr/#", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if err := rr.Publish(ctx, PublishOptions{Topic: "rr/x", Payload: []byte{byte(i)}, QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if got := recvFrom(t, ch, 6); len(got["a"]) != 3 || len(got["b"]) != 3 {
		t.Fatalf("round robin: a %d b %d", len(got["a"]), len(got["b"]))
	}

	// Client ids of its own: with rr's ids each group would take the other's sessions over.
	hg := newTestGroup(t, []string{ba.URL, bb.URL}, WithGroupPublishPolicy(GroupHashByTopic),
		WithGroupOptions(WithClientID("grp-hash")))
	if id := hg.Member("a").ClientID(); id != "grp-hash" {
		t.Fatalf("hash group's client id %q", id)
	}
	hch, _, err := hg.Subscribe(ctx, []TopicFilter{{Topic: "hash/#", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	topics := []string{"hash/1", "hash/2", "hash/3", "hash/4", "hash/5", "hash/6"}
	for range 3 {
		for _, tp := range topics {
			if err := hg.Publish(ctx, PublishOptions{Topic: tp, QoS: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	where := make(map[string]string)
	used := make(map[string]bool)
	for name, ms := range recvFrom(t, hch, 3*len(topics)) {
		used[name] = true
		for _, m := range ms {
			if prev, ok := where[m.Topic]; ok && prev != name {
				t.Fatalf("topic %s went to %s and %s", m.Topic, prev, name)
			}
			where[m.Topic] = name
		}
	}
	for _, tp := range topics {
		h := fnv.New32a()
		h.Write([]byte(tp))
		if want := string(rune('a' + h.Sum32()%2)); where[tp] != want {
			t.Fatalf("topic %s on %s, want %s", tp, where[tp], want)
		}
	}
	if len(used) != 2 {
		t.Fatalf("members used: %v", used)
	}
}

// Per-member unsubscribe leaves the others; unsubscribe-all ends the merged stream. The
// queue and callback forms merge too.
func TestGroupUnsubscribeAndForms(t *testing.T) {
	ba, bb := twoBrokers(t)
	g := newTestGroup(t, []string{ba.URL, bb.URL})
	ctx := testCtx(t)
	ch, gs, err := g.Subscribe(ctx, []TopicFilter{{Topic: "un/#", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	// Distinct filters: a broker keeps one subscription per filter and client.
	q, _, err := g.SubscribeQueue(ctx, []TopicFilter{{Topic: "un/+", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	cb := make(chan string, 8)
	if _, err := g.SubscribeCallback(ctx, []TopicFilter{{Topic: "+/x", QoS: 1}}, func(m *Message) { cb <- m.Member() }); err != nil {
		t.Fatal(err)
	}
	if err := gs.UnsubscribeMember(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := g.Publish(ctx, PublishOptions{Topic: "un/x", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if got := recvFrom(t, ch, 1); len(got["b"]) != 1 {
		t.Fatalf("after unsubscribing a: %v", got)
	}
	seen := map[string]bool{}
	for range 2 {
		m, ok := q.Pop(ctx)
		if !ok {
			t.Fatal("queue ended")
		}
		seen[m.Member()] = true
		m.Ack()
		seen["cb-"+<-cb] = true
	}
	if len(seen) != 4 {
		t.Fatalf("queue and callback forms saw %v", seen)
	}
	if err := gs.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("message %q after unsubscribe-all", m.Topic)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("merged channel not closed after unsubscribe-all")
	}
	if _, err := NewClientGroup([]GroupMember{{Name: "x", Options: []Option{WithBroker(ba.URL)}},
		{Name: "x", Options: []Option{WithBroker(bb.URL)}}}); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("duplicate names: %v", err)
	}
}
