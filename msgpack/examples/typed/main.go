// Command typed publishes a Go value as MessagePack and reads it back through a typed
// subscription.
//
//	go run ./examples/typed -broker mqtt://localhost:1883
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/msgpack"
)

// Reading is one sensor sample.
type Reading struct {
	Sensor string  `msgpack:"sensor"`
	Temp   float64 `msgpack:"temp"`
}

func main() {
	broker := flag.String("broker", "mqtt://localhost:1883", "broker URL")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	client, err := tern.New(tern.WithBroker(*broker))
	if err != nil {
		log.Fatal(err)
	}
	readings := tern.NewTyped(client, msgpack.Codec[Reading]{})
	msgs, _, err := readings.Subscribe(ctx, []tern.TopicFilter{{Topic: "sensors/+", QoS: 1}})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer client.Disconnect(context.Background())

	// Content Type is set from the codec: application/msgpack.
	err = readings.Publish(ctx, tern.PublishOptions{Topic: "sensors/a1", QoS: 1}, Reading{Sensor: "a1", Temp: 21.5})
	if err != nil {
		log.Fatal(err)
	}
	select {
	case m := <-msgs:
		if m.Err != nil {
			log.Fatal(m.Err) // the payload did not decode; the subscription carries on
		}
		fmt.Printf("%s: %+v (%s)\n", m.Topic, m.Value, m.ContentType)
		m.Ack()
	case <-ctx.Done():
		log.Fatal(ctx.Err())
	}
}
