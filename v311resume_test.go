package tern_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/codec/json"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
)

type v311Reading struct {
	Seq int `json:"seq"`
}

// Across processes on MQTT 3.1.1 (Clean Session 0), against Mosquitto: a publisher whose QoS 2
// messages never reached the broker stops with them in its filestore; the next process on the
// same store and client id sends them (DUP) on its first connection. The subscriber, also a
// new process on its persistent session, makes a typed subscription before Connect and gets
// the messages the broker queued for it meanwhile, each exactly once.
// Promise: a message accepted into the store is delivered by the next process, exactly once
// at QoS 2; a resumed session's queued messages find the routes made before Connect.
func TestV311NewProcessResumesStoreAndSession(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	px := faultproxy.New(t, b.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	const n = tern.DefaultMQTT311Window // all in flight at once

	// The subscriber's first process makes the session and its subscription, then stops.
	sub1 := mustConnect(t, append(v311Session("v311-rs-sub"), tern.WithBroker(b.URL))...)
	if _, err := sub1.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: "v311/rs/#", QoS: 2}}, func(*tern.Message) {}); err != nil {
		t.Fatal(err)
	}
	disconnect(t, sub1)

	// The publisher's first process: every PUBLISH is held back by the proxy, then the
	// connection is cut and the process stops with its messages in the store.
	dir := t.TempDir()
	st1, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	up, ups := upEvents()
	pub1 := mustConnect(t, append(v311Session("v311-rs-pub"), tern.WithBroker(px.URL()), tern.WithStore(st1), tern.WithStats(), up)...)
	waitUp(t, ups, "first publisher")
	px.Hold(true)
	for i := range n {
		if _, err := pub1.PublishAsync(ctx, tern.PublishOptions{Topic: fmt.Sprintf("v311/rs/%d", i), QoS: 2,
			Payload: fmt.Appendf(nil, `{"seq":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := px.WaitConns(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for px.HeldPublishes() < n {
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d publishes held; conns %d; publisher %+v", px.HeldPublishes(), n, px.Conns(), pub1.Stats())
		case <-time.After(2 * time.Millisecond): // pacing a counter poll
		}
	}
	px.Refuse(true)
	px.Cut()
	disconnect(t, pub1)
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}

	// The subscriber's second process: typed subscription before Connect.
	sub2, err := tern.New(append(v311Session("v311-rs-sub"), tern.WithBroker(b.URL))...)
	if err != nil {
		t.Fatal(err)
	}
	typ := tern.NewTyped(sub2, json.Codec[v311Reading]{})
	ch, _, err := typ.Subscribe(ctx, []tern.TopicFilter{{Topic: "v311/rs/#", QoS: 2}}, tern.SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := sub2.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer disconnect(t, sub2)

	// The publisher's second process on the same store.
	st2, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	pub2 := mustConnect(t, append(v311Session("v311-rs-pub"), tern.WithBroker(b.URL), tern.WithStore(st2), tern.WithStats())...)
	defer disconnect(t, pub2)

	got := make(map[int]int)
	for len(got) < n {
		select {
		case m := <-ch:
			if m.Err != nil {
				t.Fatalf("decode: %v", m.Err)
			}
			got[m.Value.Seq]++
		case <-ctx.Done():
			t.Fatalf("%d of %d messages arrived; publisher %+v", len(got), n, pub2.Stats())
		}
	}
	// Anything more would be a duplicate: give the broker a moment's worth of traffic.
	if err := pub2.Publish(ctx, tern.PublishOptions{Topic: "v311/rs/end", QoS: 2, Payload: []byte(`{"seq":-1}`)}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case m := <-ch:
			if m.Value.Seq == -1 {
				for seq, k := range got {
					if k != 1 {
						t.Errorf("message %d delivered %d times", seq, k)
					}
				}
				if r := pub2.Stats().PublishResent; r < n {
					t.Errorf("second publisher resent %d, want %d (the stored messages)", r, n)
				}
				return
			}
			got[m.Value.Seq]++
		case <-ctx.Done():
			t.Fatal("end marker never arrived")
		}
	}
}
