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
	"sync"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
	"github.com/ternmq/tern/filestore"
)

func main() {
	broker := flag.String("broker", "mqtt://localhost:1883", "broker URL")
	dir := flag.String("dir", "outbox", "queue directory")
	n := flag.Int("n", 1000, "messages to enqueue")
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

	// Each Publish returns once its message is synced to disk. One goroutine at a time
	// would pay one fsync per message; concurrent callers share each fsync (group commit).
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < *n; i += 16 {
				m := tern.PublishOptions{Topic: "orders", Payload: fmt.Appendf(nil, "order %d", i), QoS: 1}
				if err := p.Publish(ctx, m); err != nil {
					log.Print(err)
				}
			}
		})
	}
	wg.Wait()

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
