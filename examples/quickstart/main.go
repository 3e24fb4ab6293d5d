// Command quickstart connects to a broker, subscribes, publishes one message and prints it.
//
//	go run ./examples/quickstart -broker mqtt://localhost:1883
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"github.com/ternmq/tern"
)

func main() {
	broker := flag.String("broker", "mqtt://localhost:1883", "broker URL")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := tern.New(
		tern.WithBroker(*broker),
		tern.WithClientID("quickstart"),
	)
	if err != nil {
		log.Fatal(err) // every option is checked here
	}
	// Subscribing before Connect: the route exists before the broker can deliver anything.
	msgs, _, err := c.Subscribe(ctx, []tern.TopicFilter{{Topic: "events/#", QoS: 1}})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(context.Background())

	// Returns when the broker has acknowledged (PUBACK); a refusal is a *tern.ReasonCodeError.
	err = c.Publish(ctx, tern.PublishOptions{Topic: "events/hello", Payload: []byte("hi"), QoS: 1})
	if err != nil {
		log.Fatal(err)
	}
	select {
	case m := <-msgs:
		fmt.Printf("%s: %s\n", m.Topic, m.Payload)
		m.Ack() // acknowledgements reach the broker in arrival order
	case <-ctx.Done():
		log.Fatal("no message: ", ctx.Err())
	}
}
