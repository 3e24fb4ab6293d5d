package main

import (
	"context"
	"fmt"
	"os"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
)

// queuePublisher is what the demo needs of tern.QueuePublisher, which *tern.QueuePublisher
// satisfies as it is: Publish returns once the message is stored, Stats tells how far the
// drain has got, Close stops it once what is in flight is acknowledged.
type queuePublisher interface {
	Publish(ctx context.Context, m tern.PublishOptions) error
	Stats() tern.QueuePublisherStats
	Close(ctx context.Context) error
}

// openPublisher returns the demo's publisher on c with its durable queue in dir, and the
// function that closes the queue after the publisher.
func openPublisher(c *tern.Client, dir string) (qp queuePublisher, closeQueue func() error, name string, err error) {
	q, err := filequeue.Open(dir)
	if err != nil {
		return nil, nil, "", err
	}
	p, err := tern.NewQueuePublisher(c, q, tern.WithDeadLetter(func(e tern.QueueEntry, err error) {
		// The demo gives up on nothing: any dead letter is a message the report counts lost.
		fmt.Fprintf(os.Stderr, "dead letter: seq %d: %v\n", e.Seq, err)
	}))
	if err != nil {
		q.Close()
		return nil, nil, "", err
	}
	return p, q.Close, "tern.QueuePublisher on filequeue (" + dir + ")", nil
}
