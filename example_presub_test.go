package tern_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/ternmq/tern"
)

// A program with a persistent session subscribes before Connect, so that the messages the
// broker kept for it while it was away, delivered right after CONNACK, find their
// subscription. Wait reports the broker's answer to the SUBSCRIBE once it arrives; messages
// no subscription matches go to the catch-all handler instead of being dropped.
func ExampleSubscription_Wait() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tern.New(tern.WithBroker(os.Getenv("MQTT_BROKER")),
		tern.WithClientID("example-presub"), tern.WithCleanStart(false),
		tern.WithSessionExpiry(time.Minute),
		tern.WithUnroutedHandler(func(m *tern.Message) { log.Printf("unrouted: %s", m.Topic) }))
	if err != nil {
		log.Fatal(err)
	}
	msgs, sub, err := c.Subscribe(ctx, []tern.TopicFilter{{Topic: "presub/#", QoS: 1}})
	if err != nil {
		log.Fatal(err) // only invalid filters or options fail here
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	zero := time.Duration(0)
	defer c.DisconnectWith(ctx, tern.DisconnectOptions{SessionExpiry: &zero})
	if err := sub.Wait(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("granted QoS", sub.Results()[0].GrantedQoS)

	if err := c.Publish(ctx, tern.PublishOptions{Topic: "presub/hello", Payload: []byte("again"), QoS: 1}); err != nil {
		log.Fatal(err)
	}
	m := <-msgs
	fmt.Printf("%s %s\n", m.Topic, m.Payload)
	m.Ack()
	// Output:
	// granted QoS 1
	// presub/hello again
}
