package tern_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/codec/json"
)

type Reading struct {
	Device string  `json:"device"`
	Temp   float64 `json:"temp"`
}

// Typed publishing and subscribing: values go out as JSON with Content Type
// application/json and come back decoded. A payload that does not decode arrives with Err set
// and the subscription carries on.
func ExampleNewTyped() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := connect()
	defer c.Disconnect(ctx)

	readings := tern.NewTyped(c, json.Codec[Reading]{})
	msgs, _, err := readings.Subscribe(ctx, []tern.TopicFilter{{Topic: "example/typed/+", QoS: 1}})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Publish(ctx, tern.PublishOptions{Topic: "example/typed/a1", Payload: []byte("garbage"), QoS: 1}); err != nil {
		log.Fatal(err)
	}
	if err := readings.Publish(ctx, tern.PublishOptions{Topic: "example/typed/a1", QoS: 1}, Reading{Device: "a1", Temp: 22.5}); err != nil {
		log.Fatal(err)
	}
	for range 2 {
		m := <-msgs
		if m.Err != nil {
			fmt.Println("undecodable payload:", string(m.Payload))
		} else {
			fmt.Println(m.Topic, m.ContentType, m.Value.Device, m.Value.Temp)
		}
		m.Ack()
	}
	// Output:
	// undecodable payload: garbage
	// example/typed/a1 application/json a1 22.5
}

// A TypedQueue decodes as it pops; a callback subscription gets decoded messages too.
func ExampleTyped_SubscribeQueue() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := connect()
	defer c.Disconnect(ctx)

	readings := tern.NewTyped(c, json.Codec[Reading]{})
	q, _, err := readings.SubscribeQueue(ctx, []tern.TopicFilter{{Topic: "example/tq", QoS: 1}}, tern.SubAutoAck())
	if err != nil {
		log.Fatal(err)
	}
	if err := readings.Publish(ctx, tern.PublishOptions{Topic: "example/tq", QoS: 1}, Reading{Device: "b7", Temp: -3}); err != nil {
		log.Fatal(err)
	}
	if m, ok := q.Pop(ctx); ok {
		fmt.Println(m.Value.Device, m.Value.Temp)
	}
	// Output: b7 -3
}
