package filequeue_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
)

// A queue survives a restart: what was enqueued and not acknowledged comes back.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "queue-example-")
	defer os.RemoveAll(dir)

	q, err := filequeue.Open(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range []string{"one", "two", "three"} {
		e := tern.QueueEntry{Message: tern.PublishOptions{Topic: "greetings", Payload: []byte(p), QoS: 1}}
		if err := q.Enqueue(context.Background(), &e); err != nil {
			fmt.Println(err)
			return
		}
	}
	q.Ack(2) // delivered
	q.Close()

	q, _ = filequeue.Open(dir)
	defer q.Close()
	entries, _ := q.Read(0, 10, nil)
	for _, e := range entries {
		fmt.Println(e.Seq, string(e.Message.Payload))
	}
	fmt.Println("depth", q.Stats().Depth)
	// Output:
	// 1 one
	// 3 three
	// depth 2
}
