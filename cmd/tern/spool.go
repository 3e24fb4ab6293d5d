package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
)

// runSpool is tern pub --queue DIR: store and forward. Each input message is stored in the
// durable queue in DIR (fsynced) before it counts as accepted; a tern.QueuePublisher sends
// what the queue holds, in order, whenever a connection is up, messages left by an earlier
// run first. After the input ends it keeps sending until the queue is empty, --drain-timeout
// passes or the user interrupts, then reports how many messages were delivered and how many
// wait in DIR for the next run. A crash (kill -9) at any point loses nothing that was
// accepted: the next run sends it (possibly again: at least once).
func runSpool(ctx context.Context, f *pubFlags, tmpl tern.PublishOptions, stdout, stderr io.Writer) error {
	extra := []tern.Option{tern.WithBackgroundConnect()} // storing never waits for the broker
	if f.topicAlias {
		extra = append(extra, tern.WithTopicAliases(true))
	}
	_, opts, err := f.conn.options(extra...)
	if err != nil {
		return err
	}
	q, err := filequeue.Open(f.queue)
	if err != nil {
		return fmt.Errorf("--queue: %w", err)
	}
	defer q.Close()
	waitingBefore := q.Stats().Depth
	cl, err := connect(ctx, opts)
	if err != nil {
		return err
	}
	defer disconnect(cl)
	var gaveUp atomic.Int64
	qp, err := tern.NewQueuePublisher(cl, q, tern.WithDeadLetter(func(e tern.QueueEntry, err error) {
		// The queue publisher removes a message it gives up on; say so, with the message.
		gaveUp.Add(1)
		fmt.Fprintf(stderr, "tern pub: gave up on queued message %d (topic %q, %d bytes): %v\n", e.Seq, e.Message.Topic, len(e.Message.Payload), err)
	}))
	if err != nil {
		return err
	}

	accepted, ierr := spoolInput(ctx, f, tmpl, qp, stdout)
	if ierr == nil {
		ierr = drainQueue(ctx, qp, f.drainTimeout)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	qp.Close(cctx)
	cancel()
	st := qp.Stats()
	waiting := q.Stats().Depth
	fmt.Fprintf(stderr, "tern pub: accepted %d, delivered %d, waiting %d in %s (%d were waiting at the start)\n",
		accepted, st.Delivered, waiting, f.queue, waitingBefore)
	if waiting > 0 && st.LastError != nil {
		fmt.Fprintf(stderr, "tern pub: last error: %v\n", st.LastError)
	}
	switch {
	case ierr != nil && !errors.Is(ierr, context.Canceled):
		return ierr
	case gaveUp.Load() > 0:
		return fmt.Errorf("%d queued messages given up", gaveUp.Load())
	}
	return nil // interrupted or drained: what was accepted is stored
}

// spoolInput stores every input message in the queue; with --print-stored each stored
// message is confirmed on stdout as "stored N" (N counts input messages from 1 in this run)
// once it is durable. It returns how many were stored.
func spoolInput(ctx context.Context, f *pubFlags, tmpl tern.PublishOptions, qp *tern.QueuePublisher, stdout io.Writer) (int, error) {
	n := 0
	var failed error
	pace := newPacer(f)
	err := f.messages(func(payload []byte) bool {
		if failed = pace.wait(ctx); failed != nil {
			return false
		}
		m := tmpl
		m.Payload = append([]byte(nil), payload...)
		if failed = qp.Publish(ctx, m); failed != nil {
			failed = fmt.Errorf("store message %d: %w", n+1, failed)
			return false
		}
		n++
		if f.printStored {
			fmt.Fprintf(stdout, "stored %d\n", n)
		}
		return true
	})
	if err == nil {
		err = failed
	}
	return n, err
}

// drainQueue waits until the queue is empty, limit passes or ctx ends.
func drainQueue(ctx context.Context, qp *tern.QueuePublisher, limit time.Duration) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if st := qp.Stats(); st.Depth == 0 && st.InFlight == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil // what is left waits for the next run; the report says how much
		case <-tick.C:
		}
	}
}
