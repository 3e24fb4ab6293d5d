package tern_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// connect returns a connected client for the examples. MQTT_BROKER holds the broker's URL,
// such as mqtt://localhost:1883.
func connect(opts ...tern.Option) *tern.Client {
	c, err := tern.New(append([]tern.Option{tern.WithBroker(os.Getenv("MQTT_BROKER"))}, opts...)...)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(context.Background()); err != nil {
		log.Fatal(err)
	}
	return c
}

// The minimal loop: connect, subscribe, publish, receive, acknowledge, disconnect.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tern.New(tern.WithBroker(os.Getenv("MQTT_BROKER")), tern.WithClientID("example"))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)

	msgs, _, err := c.Subscribe(ctx, []tern.TopicFilter{{Topic: "example/#", QoS: 1}})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Publish(ctx, tern.PublishOptions{Topic: "example/hello", Payload: []byte("world"), QoS: 1}); err != nil {
		log.Fatal(err)
	}
	m := <-msgs
	fmt.Printf("%s %s\n", m.Topic, m.Payload)
	m.Ack()
	// Output: example/hello world
}

// New checks every option before anything connects.
func ExampleNew() {
	_, err := tern.New(tern.WithBroker("http://localhost"))
	fmt.Println(errors.Is(err, tern.ErrInvalidOption))
	// Output: true
}

// Publish with properties; QoS 1 returns once the broker acknowledged.
func ExampleClient_Publish() {
	ctx := context.Background()
	c := connect()
	defer c.Disconnect(ctx)
	err := c.Publish(ctx, tern.PublishOptions{
		Topic:          "example/orders",
		Payload:        []byte(`{"id":1}`),
		QoS:            1,
		ContentType:    "application/json",
		MessageExpiry:  time.Minute,
		UserProperties: []packet.UserProperty{{Key: "source", Value: "example"}},
	})
	fmt.Println(err)
	// Output: <nil>
}

// One goroutine keeps the broker's whole Receive Maximum window busy with PublishAsync and
// collects the outcomes afterwards.
func ExampleClient_PublishAsync() {
	ctx := context.Background()
	c := connect()
	defer c.Disconnect(ctx)
	var tokens []*tern.PublishToken
	for i := range 100 {
		tok, err := c.PublishAsync(ctx, tern.PublishOptions{Topic: "example/async", Payload: []byte{byte(i)}, QoS: 1})
		if err != nil {
			log.Fatal(err)
		}
		tokens = append(tokens, tok)
	}
	failed := 0
	for _, tok := range tokens {
		if tok.Wait(ctx) != nil {
			failed++
		}
	}
	fmt.Println("failed:", failed)
	// Output: failed: 0
}

// A queue subscription with a small buffer that drops the oldest message when full.
func ExampleClient_SubscribeQueue() {
	ctx := context.Background()
	c := connect()
	defer c.Disconnect(ctx)
	q, _, err := c.SubscribeQueue(ctx, []tern.TopicFilter{{Topic: "example/queue", QoS: 1}},
		tern.SubBuffer(16), tern.SubDropPolicy(tern.DropOldest))
	if err != nil {
		log.Fatal(err)
	}
	c.Publish(ctx, tern.PublishOptions{Topic: "example/queue", Payload: []byte("queued"), QoS: 1})
	m, _ := q.Pop(ctx)
	fmt.Println(string(m.Payload))
	m.Ack()
	// Output: queued
}

// A callback subscription: the handler runs on the subscription's own goroutine and the
// message is acknowledged when it returns.
func ExampleClient_SubscribeCallback() {
	ctx := context.Background()
	c := connect()
	defer c.Disconnect(ctx)
	got := make(chan string, 1)
	_, err := c.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: "example/cb", QoS: 1}}, func(m *tern.Message) {
		got <- string(m.Payload)
	})
	if err != nil {
		log.Fatal(err)
	}
	c.Publish(ctx, tern.PublishOptions{Topic: "example/cb", Payload: []byte("called"), QoS: 1})
	fmt.Println(<-got)
	// Output: called
}

// Subscribe reports the broker's answer per filter.
func ExampleClient_Subscribe() {
	ctx := context.Background()
	c := connect()
	defer c.Disconnect(ctx)
	_, sub, err := c.Subscribe(ctx, []tern.TopicFilter{{Topic: "example/a", QoS: 2}, {Topic: "example/b", QoS: 0}}, tern.SubAutoAck())
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range sub.Results() {
		fmt.Println(r.Filter, r.GrantedQoS, r.Err)
	}
	fmt.Println(sub.Unsubscribe(ctx))
	// Output:
	// example/a 2 <nil>
	// example/b 0 <nil>
	// <nil>
}

// DisconnectWith can ask the broker to publish the will (reason code 0x04) and end the
// session now.
func ExampleClient_DisconnectWith() {
	c := connect(tern.WithWill(&packet.Will{Topic: "example/status", Payload: []byte("offline")}))
	zero := time.Duration(0)
	err := c.DisconnectWith(context.Background(), tern.DisconnectOptions{
		ReasonCode:    packet.DisconnectWithWillMessage,
		SessionExpiry: &zero,
	})
	fmt.Println(err)
	// Output: <nil>
}
