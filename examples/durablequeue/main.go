// Command durablequeue stores messages in a file-backed queue and publishes them through
// outages: a message counts as accepted once it is on disk, and a background drain sends it
// when the broker is reachable, in this run or a later one.
//
//	go run ./examples/durablequeue -broker mqtt://localhost:1883 -dir /tmp/outbox
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
	"github.com/ternmq/tern/filestore"
)

func main() {
	broker := flag.String("broker", "mqtt://localhost:1883", "broker URL")
	dir := flag.String("dir", "outbox", "queue directory")
	n := flag.Uint("n", 1000, "messages to enqueue")
	flag.Parse()
	ctx := context.Background()

	// The client's own session (QoS 1/2 in flight) survives a crash too.
	store, err := filestore.Open(*dir + "/session")
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	c, err := tern.New(
		tern.WithBroker(*broker),
		tern.WithClientID("outbox-1"),
		tern.WithSessionExpiry(time.Hour),
		tern.WithStore(store),
		tern.WithBackgroundConnect(), // start offline if the broker is down
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)

	q, err := filequeue.Open(*dir + "/queue") // append-only, checksummed, group commit
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	p, err := tern.NewQueuePublisher(c, q, tern.WithQueueTTL(24*time.Hour))
	if err != nil {
		log.Fatal(err)
	}

	// Publish returns once its message is synced to disk, so a loop calling it one message
	// at a time waits for one fsync per message (a few thousand a second). PublishAsync
	// returns at once with a token resolved when the message is synced: messages given
	// meanwhile share each fsync (group commit), so one goroutine stores tens of thousands
	// a second. Several goroutines calling Publish share fsyncs too.
	var toks []*tern.QueueToken
	for i := range *n {
		m := tern.PublishOptions{Topic: "orders", Payload: fmt.Appendf(nil, "order %d", i), QoS: 1}
		tok, err := p.PublishAsync(ctx, m)
		if err != nil {
			log.Print(err)
			continue
		}
		toks = append(toks, tok)
	}
	for _, tok := range toks {
		if err := tok.Wait(ctx); err != nil {
			log.Print(err) // not stored (a failed disk): the message is not queued
		}
	}

	// Wait up to 10 s for the drain; what is left is sent by the next run.
	drainCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for p.Stats().Depth > 0 && drainCtx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	st := p.Stats()
	fmt.Printf("delivered %d, waiting %d\n", st.Delivered, st.Depth) // waiting: sent by the next run
	closeCtx, cancelClose := context.WithTimeout(ctx, 2*time.Second)
	defer cancelClose()
	p.Close(closeCtx) // unacknowledged messages stay stored either way
}
