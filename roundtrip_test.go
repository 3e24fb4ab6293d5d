package tern

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newTestClient connects a client to url and disconnects it at cleanup.
func newTestClient(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(append([]Option{WithBroker(url), WithStats()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Disconnect(ctx); err != nil {
			t.Errorf("disconnect: %v", err)
		}
	})
	return c
}

func recv(t *testing.T, ch <-chan *Message) *Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

func TestRoundTripAllQoS(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	sub := newTestClient(t, b.URL)
	pub := newTestClient(t, b.URL)
	for qos := byte(0); qos <= 2; qos++ {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			topic := fmt.Sprintf("rt/%d", qos)
			ch, s, err := sub.Subscribe(ctx, []TopicFilter{{Topic: topic, QoS: 2}})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Results()[0].GrantedQoS; got != 2 {
				t.Fatalf("granted QoS %d, want 2", got)
			}
			want := PublishOptions{
				Topic: topic, Payload: []byte("hello"), QoS: qos,
				PayloadFormat: 1, MessageExpiry: time.Hour, ContentType: "text/plain",
				ResponseTopic: "reply/here", CorrelationData: []byte{1, 2, 3},
				UserProperties: []packet.UserProperty{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}, {Key: "b", Value: ""}},
			}
			if err := pub.Publish(ctx, want); err != nil {
				t.Fatal(err)
			}
			m := recv(t, ch)
			if m.Topic != topic || !bytes.Equal(m.Payload, want.Payload) || m.QoS != qos {
				t.Fatalf("got %q %q qos %d", m.Topic, m.Payload, m.QoS)
			}
			if m.PayloadFormat != 1 || m.ContentType != "text/plain" || m.ResponseTopic != "reply/here" ||
				!bytes.Equal(m.CorrelationData, []byte{1, 2, 3}) {
				t.Fatalf("properties lost: %+v", m)
			}
			if m.MessageExpiry == 0 || m.MessageExpiry > 3600 {
				t.Fatalf("message expiry %d, want (0, 3600]", m.MessageExpiry)
			}
			if fmt.Sprint(m.UserProperties) != fmt.Sprint(want.UserProperties) {
				t.Fatalf("user properties %v, want %v", m.UserProperties, want.UserProperties)
			}
			if err := m.Ack(); err != nil {
				t.Fatal(err)
			}
			if err := s.Unsubscribe(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok := <-ch; ok {
				t.Fatal("channel still open after Unsubscribe")
			}
		})
	}
}
