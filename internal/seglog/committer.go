package seglog

import (
	"context"
	"fmt"
	"sync"
)

// Pending is a record added without waiting for its sync: the ticket Add returned, a number
// the owner may use (filequeue's sequence), and the function told the outcome.
type Pending struct {
	T    Ticket
	Seq  uint64
	Done func(error)
}

// Committer reports records added to a Log without waiting, in groups: its goroutine waits
// for the sync covering the newest pending record, which makes every older one durable (the
// log writes and syncs in order), and then tells each its outcome. While one sync runs the
// next records pile up and share the next one: group commit across time, so a single
// producer reaches the throughput of many.
//
// The list of pending records is guarded by the owner's mutex, so the owner adds a record
// to the log and lists it in one step (ListLocked) and the list stays in log order. The
// number pending at once is bounded by slots (Acquire, Release). Zero value: not started.
type Committer struct {
	log    *Log
	mu     *sync.Mutex
	settle func(last Pending) error
	prefix string

	list  []Pending // guarded by *mu
	spare []Pending // guarded by *mu
	slots chan struct{}
	kick  chan struct{} // cap 1: list is not empty
	quit  chan struct{}
	done  chan struct{}
}

// Start starts the committer's goroutine. mu guards the list; max bounds the pending
// records; settle, when not nil, runs on the goroutine once the newest record of a round is
// durable and before any is reported (an error it returns goes to the whole round); prefix
// starts every error reported ("filestore: put").
func (c *Committer) Start(log *Log, mu *sync.Mutex, max int, settle func(last Pending) error, prefix string) {
	c.log, c.mu, c.settle, c.prefix = log, mu, settle, prefix
	c.slots = make(chan struct{}, max)
	c.kick = make(chan struct{}, 1)
	c.quit = make(chan struct{})
	c.done = make(chan struct{})
	go c.loop()
}

// Stop settles every record listed so far and stops the goroutine. The owner calls it once
// nothing more can be listed, and before closing the log.
func (c *Committer) Stop() {
	close(c.quit)
	<-c.done
}

// Acquire takes a slot for one record, waiting while max are pending, bounded by ctx.
func (c *Committer) Acquire(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Release gives back a slot taken by Acquire for a record that was never listed.
func (c *Committer) Release() { <-c.slots }

// ListLocked lists p for the next round. The caller holds the owner's mutex and has added
// p's record to the log in the same critical section.
func (c *Committer) ListLocked(p Pending) { c.list = append(c.list, p) }

// Kick tells the goroutine that records are listed.
func (c *Committer) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Committer) loop() {
	defer close(c.done)
	for {
		select {
		case <-c.kick:
			c.round()
		case <-c.quit:
			c.round()
			return
		}
	}
}

// round settles the records listed so far; those listed meanwhile wait for the next round.
func (c *Committer) round() {
	c.mu.Lock()
	batch := c.list
	c.list = c.spare[:0]
	c.spare = nil
	c.mu.Unlock()
	if len(batch) > 0 {
		last := batch[len(batch)-1]
		err := c.log.Wait(context.Background(), last.T, true)
		if err == nil && c.settle != nil {
			err = c.settle(last)
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", c.prefix, err)
		}
		for i := range batch {
			batch[i].Done(err)
			batch[i] = Pending{}
			<-c.slots
		}
	}
	c.mu.Lock()
	if c.spare == nil {
		c.spare = batch[:0]
	}
	c.mu.Unlock()
}
