package filequeue

import (
	"context"
	"fmt"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog"
)

// Asynchronous enqueue. Enqueue waits for its own sync, so one goroutine calling it in a
// loop pays one fsync per entry. EnqueueAsync adds the entry and returns; the queue's
// committer (seglog.Committer, one goroutine per Queue) reports each entry once a sync
// covers it, so entries added while one sync runs share the next: group commit across
// time, for a single producer.

// DefaultMaxPending is how many EnqueueAsync entries may wait for their sync at once unless
// WithMaxPending says otherwise.
const DefaultMaxPending = 8192

func (q *Queue) startCommitter() {
	q.async.Start(q.log, &q.mu, q.cfg.maxPending, q.settleAsync, "filequeue: enqueue")
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
	if err := q.async.Acquire(ctx); err != nil {
		return err
	}
	if _, _, _, _, err := q.add(e, done); err != nil {
		q.async.Release()
		return err
	}
	q.async.Kick()
	return nil
}

// settleAsync runs on the committer's goroutine once the newest entry of a round is
// durable: it renews the sequence reservation if it runs low and lets Read and Stats see
// the entries. An error goes to every entry of the round.
func (q *Queue) settleAsync(last seglog.Pending) error {
	q.mu.Lock()
	extend := last.Seq+reserveAhead/2 > q.reserved
	q.mu.Unlock()
	if extend {
		if err := q.reserve(context.Background(), last.Seq); err != nil {
			return err
		}
	}
	q.markDurable(last.Seq)
	return nil
}
