package tern_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
)

// stallOnRelease is a Store that runs stall once, right after the first RecordReleased is
// stored: before the PUBREL that follows it is written.
type stallOnRelease struct {
	tern.Store
	once  sync.Once
	stall func()
}

func (s *stallOnRelease) Put(r tern.StoreRecord) error {
	err := s.Store.Put(r)
	if r.Kind == tern.RecordReleased {
		s.once.Do(s.stall)
	}
	return err
}

func mustConnect(t *testing.T, opts ...tern.Option) *tern.Client {
	t.Helper()
	c, err := tern.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func disconnect(t *testing.T, c *tern.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Disconnect(ctx); err != nil {
		t.Errorf("disconnect: %v", err)
	}
}

// A graceful Disconnect of a session that outlives the connection (session expiry > 0) keeps
// the in-flight QoS 2 state in the store: a new client on the same store resumes it, sending
// PUBREL for the message past PUBREC (which the broker holds) and the unacknowledged
// messages again, and each arrives exactly once.
// Promise: an acknowledged-for-storage message is never lost by a graceful stop.
func TestDisconnectKeepsSessionForNextProcess(t *testing.T) {
	testKeepSessionForNextProcess(t, tern.MQTT5)
}

// The same on MQTT 3.1.1 (Clean Session 0), where the QoS 2 exchanges resume from the
// filestore just the same.
func TestDisconnectKeepsSessionForNextProcessV311(t *testing.T) {
	testKeepSessionForNextProcess(t, tern.MQTT311)
}

func testKeepSessionForNextProcess(t *testing.T, proto tern.Protocol) {
	broker := brokertest.StartMosquitto(t, brokertest.Config{})
	sub := mustConnect(t, tern.WithBroker(broker.URL))
	t.Cleanup(func() { disconnect(t, sub) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, _, err := sub.Subscribe(ctx, []tern.TopicFilter{{Topic: "keep/#", QoS: 2}}, tern.SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}

	px := faultproxy.New(t, broker.Addr)
	dir := t.TempDir()
	fs1, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	store := &stallOnRelease{Store: fs1, stall: func() { px.Stall(); close(released) }}
	session := []tern.Option{tern.WithClientID("keeper"), tern.WithCleanStart(false),
		tern.WithSessionExpiry(time.Hour)}
	session = append(session, tern.WithProtocol(proto))
	wantLevel := byte(5)
	if proto == tern.MQTT311 {
		wantLevel = 4
	}
	c1 := mustConnect(t, append(session, tern.WithBroker(px.URL()), tern.WithStore(store))...)
	if v := c1.Info().Version; v != wantLevel {
		t.Fatalf("protocol level %d, want %d", v, wantLevel)
	}
	var want []string
	publish := func(topic string) {
		if _, err := c1.PublishAsync(ctx, tern.PublishOptions{Topic: topic, QoS: 2, Payload: []byte(topic)}); err != nil {
			t.Fatal(err)
		}
		want = append(want, topic)
	}
	for _, topic := range []string{"keep/a0", "keep/a1", "keep/a2"} {
		publish(topic)
	}
	select {
	case <-released: // past PUBREC, its PUBREL held by the stalled proxy
	case <-ctx.Done():
		t.Fatal("no PUBREC")
	}
	for _, topic := range []string{"keep/b0", "keep/b1", "keep/b2"} {
		publish(topic) // accepted and stored; never reach the broker
	}
	disconnect(t, c1)
	px.Cut() // what the proxy held never reaches the broker
	if err := fs1.Close(); err != nil {
		t.Fatal(err)
	}

	fs2, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs2.Close() })
	c2 := mustConnect(t, append(session, tern.WithBroker(broker.URL), tern.WithStore(fs2))...)
	// A marker published after the resumed session is delivered after every message of it.
	if err := c2.Publish(ctx, tern.PublishOptions{Topic: "keep/end", QoS: 2, Payload: []byte("keep/end")}); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for got["keep/end"] == 0 {
		select {
		case m := <-msgs:
			got[string(m.Payload)]++
		case <-ctx.Done():
			t.Fatalf("marker not received; got %v", got)
		}
	}
	for _, topic := range want {
		if got[topic] != 1 {
			t.Errorf("%s delivered %d times, want exactly once (all: %v)", topic, got[topic], got)
		}
	}
	disconnect(t, c2)
	if recs, _ := fs2.Load(); len(recs) != 0 {
		t.Errorf("%d records left in the store after every exchange completed", len(recs))
	}
}
