package filequeue

import (
	"context"
	"fmt"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog"
)

// Asynchronous enqueue. Enqueue waits for its own sync, so one goroutine calling it in a
// loop pays one fsync per entry. EnqueueAsync adds the entry and returns; a committer
// goroutine, one per Queue, waits for the sync covering the newest entry added and then
// reports every entry up to it. While one sync runs, the next entries pile up and share
// the next one: group commit across time, for a single producer.

// DefaultMaxPending is how many EnqueueAsync entries may wait for their sync at once unless
// WithMaxPending says otherwise.
const DefaultMaxPending = 8192

// pendingEntry is an entry added by EnqueueAsync whose done has not been called.
type pendingEntry struct {
	seq  uint64
	t    seglog.Ticket
	done func(error)
}

// committer settles EnqueueAsync's entries. list is guarded by Queue.mu and kept in
// sequence order (entries join it in add, under mu); the rest belongs to the committer
// goroutine.
type committer struct {
	list  []pendingEntry
	spare []pendingEntry
	slots chan struct{} // one token per pending entry: bounds the memory they hold
	kick  chan struct{} // cap 1: list is not empty
	quit  chan struct{}
	done  chan struct{}
}

func (q *Queue) startCommitter() {
	q.async.slots = make(chan struct{}, q.cfg.maxPending)
	q.async.kick = make(chan struct{}, 1)
	q.async.quit = make(chan struct{})
	q.async.done = make(chan struct{})
	go q.commitLoop()
}

// stopCommitter settles every entry added so far and stops the committer. Close calls it
// once closed is set, so nothing more joins the list, and before closing the log.
func (q *Queue) stopCommitter() {
	close(q.async.quit)
	<-q.async.done
}

// EnqueueAsync implements tern.AsyncQueue: it assigns e.Seq and e.Time (before done can
// run, so done may read them) and adds the entry as Enqueue does, but returns without waiting for it to become durable. done is called
// exactly once, on the queue's committer goroutine, in sequence order: with nil once the
// entry is as durable as the sync policy says (then Read returns it and Stats counts it),
// or with the error that stopped it (the entry may still be stored, as with Enqueue). done
// must not block and must not call the Queue. When EnqueueAsync returns an error, done is
// not called.
//
// Cost: one encoding and one copy into the pending batch; the syncs are shared with every
// other entry added meanwhile, so one goroutine in a loop reaches the throughput of many
// calling Enqueue. At most WithMaxPending entries wait at once: beyond that EnqueueAsync
// blocks, bounded by ctx, until a sync settles some. Safe for concurrent use.
func (q *Queue) EnqueueAsync(ctx context.Context, e *tern.QueueEntry, done func(error)) error {
	if done == nil {
		return fmt.Errorf("filequeue: EnqueueAsync needs a done function")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case q.async.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, _, _, _, err := q.add(e, done); err != nil {
		<-q.async.slots
		return err
	}
	select {
	case q.async.kick <- struct{}{}:
	default:
	}
	return nil
}

func (q *Queue) commitLoop() {
	defer close(q.async.done)
	for {
		select {
		case <-q.async.kick:
			q.commitRound()
		case <-q.async.quit:
			q.commitRound()
			return
		}
	}
}

// commitRound waits until the newest listed entry is durable (which makes every older one
// durable: the log writes and syncs in order), renews the sequence reservation if it runs
// low, and reports the outcome to each entry's done. Entries added meanwhile wait for the
// next round.
func (q *Queue) commitRound() {
	q.mu.Lock()
	batch := q.async.list
	q.async.list = q.async.spare[:0]
	q.async.spare = nil
	q.mu.Unlock()
	if len(batch) > 0 {
		last := batch[len(batch)-1]
		err := q.log.Wait(context.Background(), last.t, true)
		if err == nil {
			q.mu.Lock()
			extend := last.seq+reserveAhead/2 > q.reserved
			q.mu.Unlock()
			if extend {
				err = q.reserve(context.Background(), last.seq)
			}
		}
		if err == nil {
			q.markDurable(last.seq)
		} else {
			err = fmt.Errorf("filequeue: enqueue: %w", err)
		}
		for i := range batch {
			batch[i].done(err)
			batch[i] = pendingEntry{}
			<-q.async.slots
		}
	}
	q.mu.Lock()
	if q.async.spare == nil {
		q.async.spare = batch[:0]
	}
	q.mu.Unlock()
}
