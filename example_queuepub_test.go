package tern_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
)

// A QueuePublisher puts a durable queue in front of the client: PublishAsync returns at once
// and its token resolves when the message is on disk (messages given meanwhile share one
// fsync); a background drain then publishes in order, through outages and restarts.
func ExampleNewQueuePublisher() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "outbox-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	c := connect()
	defer c.Disconnect(ctx)
	msgs, _, err := c.Subscribe(ctx, []tern.TopicFilter{{Topic: "example/outbox", QoS: 1}})
	if err != nil {
		log.Fatal(err)
	}

	q, err := filequeue.Open(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	p, err := tern.NewQueuePublisher(c, q)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(ctx)

	var toks []*tern.QueueToken
	for _, s := range []string{"one", "two", "three"} {
		tok, err := p.PublishAsync(ctx, tern.PublishOptions{Topic: "example/outbox", Payload: []byte(s), QoS: 1})
		if err != nil {
			log.Fatal(err)
		}
		toks = append(toks, tok)
	}
	for _, tok := range toks {
		if err := tok.Wait(ctx); err != nil {
			log.Fatal(err) // not stored: this message is not queued
		}
	}
	for range toks {
		m := <-msgs
		fmt.Println(string(m.Payload))
		m.Ack()
	}
	// Output:
	// one
	// two
	// three
}
