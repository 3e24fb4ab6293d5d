package tern_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sort"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// A group keeps one session per broker. Here both members use the same broker (a real
// deployment would give each its own WithBroker, credentials and TLS); broadcast sends each
// message through every member, and the merged subscription says which member received what.
func ExampleNewClientGroup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	broker := os.Getenv("MQTT_BROKER")
	g, err := tern.NewClientGroup([]tern.GroupMember{
		{Name: "east", Options: []tern.Option{tern.WithBroker(broker), tern.WithClientID("ex-east")}},
		{Name: "west", Options: []tern.Option{tern.WithBroker(broker), tern.WithClientID("ex-west")}},
	}, tern.WithGroupPublishPolicy(tern.GroupBroadcast),
		tern.WithGroupOptions(tern.WithKeepAlive(30*time.Second)))
	if err != nil {
		log.Fatal(err)
	}
	if err := g.Connect(ctx); err != nil {
		log.Fatal(err) // a *tern.GroupError names the members that failed
	}
	defer g.Disconnect(ctx)

	// Each member subscribes to a filter of its own, so each hears one copy of the message.
	msgs, sub, err := g.Subscribe(ctx, []tern.TopicFilter{{Topic: "exgroup/+", QoS: 1}})
	if err != nil {
		log.Fatal(err)
	}
	if err := sub.UnsubscribeMember(ctx, "west"); err != nil {
		log.Fatal(err)
	}
	if err := g.Publish(ctx, tern.PublishOptions{Topic: "exgroup/hello", Payload: []byte("hi"), QoS: 1}); err != nil {
		log.Fatal(err)
	}
	// Both members published; only east still subscribes: two copies, both through east.
	var from []string
	for range 2 {
		m := <-msgs
		from = append(from, m.Member())
		m.Ack()
	}
	sort.Strings(from)
	fmt.Println(from, g.Names())
	// Output: [east east] [east west]
}

// SubscribeCallback on a group calls one function for every member's messages, one at a
// time.
func ExampleClientGroup_SubscribeCallback() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	broker := os.Getenv("MQTT_BROKER")
	g, err := tern.NewClientGroup([]tern.GroupMember{
		{Name: "a", Options: []tern.Option{tern.WithBroker(broker)}},
		{Name: "b", Options: []tern.Option{tern.WithBroker(broker)}},
	}, tern.WithGroupPublishPolicy(tern.GroupHashByTopic))
	if err != nil {
		log.Fatal(err)
	}
	if err := g.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer g.Disconnect(ctx)
	got := make(chan string, 2)
	_, err = g.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: "excb/#", QoS: 1}},
		func(m *tern.Message) { got <- string(m.Payload) })
	if err != nil {
		log.Fatal(err)
	}
	// Hash by topic: one member publishes; both members receive it.
	g.Publish(ctx, tern.PublishOptions{Topic: "excb/t", Payload: []byte("once"), QoS: 1})
	fmt.Println(<-got, <-got)
	// Output: once once
}

// A publisher pool adds publish-only connections, so a broker that limits the window per
// connection (Mosquitto's max_inflight_messages) carries more QoS 1 messages at once.
// Hash by topic keeps each topic's order.
func ExampleWithPublisherPool() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tern.New(tern.WithBroker(os.Getenv("MQTT_BROKER")), tern.WithClientID("ex-pool"),
		tern.WithPublisherPool(4), tern.WithPublisherPoolRouting(tern.PoolHashByTopic),
		tern.WithPublisherPoolClientID(func(parent string, i int) string {
			return fmt.Sprintf("%s/p%d", parent, i)
		}), tern.WithStats())
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)
	for i := range 10 {
		err := c.Publish(ctx, tern.PublishOptions{Topic: "expool/t", Payload: []byte{byte(i)}, QoS: 1})
		if err != nil {
			log.Fatal(err)
		}
	}
	st := c.Stats() // members connect in the background: early publishes fall back
	fmt.Println(st.PoolPublishes+st.PoolFallbacks, "published")
	// Output: 10 published
}

// A Queue of your own between goroutines: bounded, with the subscriptions' drop policies.
func ExampleNewQueue() {
	ctx := context.Background()
	q := tern.NewQueue(2, tern.DropNewest, func(v string) { fmt.Println("dropped", v) })
	q.Push(ctx, "a")
	q.Push(ctx, "b")
	if err := q.Push(ctx, "c"); errors.Is(err, tern.ErrQueueFull) {
		fmt.Println("full")
	}
	q.Close()
	for {
		v, ok := q.Pop(ctx)
		if !ok {
			break
		}
		fmt.Println(v)
	}
	// Output:
	// dropped c
	// full
	// a
	// b
}

// Telemetry that would rather drop a QoS 0 reading than wait for a slow link fails fast;
// sessions resumed on reconnect by default can be started afresh instead; CONNECT carries
// a list of user properties.
func ExampleWithWriteOverflowPolicy() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tern.New(tern.WithBroker(os.Getenv("MQTT_BROKER")),
		tern.WithWriteOverflowPolicy(tern.WriteFailFast),
		tern.WithCleanStartOnReconnect(true),
		tern.WithConnectUserProperties([]packet.UserProperty{{Key: "site", Value: "plant-3"}}))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)
	err = c.Publish(ctx, tern.PublishOptions{Topic: "exwrite/temp", Payload: []byte("21.5")})
	if errors.Is(err, tern.ErrWriteQueueFull) {
		fmt.Println("link busy: reading dropped")
		return
	}
	fmt.Println("sent:", err == nil)
	// Output: sent: true
}
