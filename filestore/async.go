package filestore

import (
	"context"
	"fmt"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog"
)

// Asynchronous puts. Put waits for its own sync, so a caller that puts records one after
// another (the client's read loop, storing the RecordReleased of each outbound QoS 2 message
// on PUBREC, or the receipt of each inbound one) pays one fsync per record. PutAsync adds the record and returns; the committer goroutine, one
// per Store, waits for the sync covering the newest record added and then reports every
// record up to it. While one sync runs the next records pile up and share the next one.

// MaxPendingAsync is how many PutAsync records may wait for their sync at once; beyond it
// PutAsync blocks until a sync settles some. The client keeps far fewer in flight (one per
// unacknowledged inbound QoS 2 message, bounded by its Receive Maximum, and one per outbound
// QoS 2 message between PUBREC and PUBREL, bounded by the broker's).
const MaxPendingAsync = 1 << 16

// pendingPut is a PutAsync record whose done has not been called.
type pendingPut struct {
	t    seglog.Ticket
	done func(error)
}

// committer settles PutAsync's records. list is guarded by Store.mu, in the order of the
// log (records join it where they are added, under mu); batches belong to the goroutine.
type committer struct {
	list  []pendingPut
	spare []pendingPut
	slots chan struct{} // one token per pending record
	kick  chan struct{} // cap 1: list is not empty
	quit  chan struct{}
	done  chan struct{}
}

func (s *Store) startCommitter() {
	s.async.slots = make(chan struct{}, MaxPendingAsync)
	s.async.kick = make(chan struct{}, 1)
	s.async.quit = make(chan struct{})
	s.async.done = make(chan struct{})
	go s.commitLoop()
}

// stopCommitter settles every record added so far and stops the committer. Close calls it
// once closed is set, so nothing more joins the list, and before closing the log.
func (s *Store) stopCommitter() {
	close(s.async.quit)
	<-s.async.done
}

// PutAsync implements tern.AsyncStore: it adds r as Put does and returns without waiting
// for the sync. done is called exactly once, on the store's committer goroutine, in the
// order of PutAsync calls: with nil once r is as durable as the sync policy says, or with
// the error that stopped it (after which, as with Put, every call fails until the store is
// reopened). When r cannot even be added (closed store, unknown kind, failed log), done is
// called before PutAsync returns. done must not block and must not call the Store.
//
// Cost: one encoding and one copy into the log's pending batch; the sync is shared with
// every record added meanwhile. At most MaxPendingAsync records wait at once: beyond that
// PutAsync blocks until a sync settles some. Safe for concurrent use.
func (s *Store) PutAsync(r tern.StoreRecord, done func(error)) {
	s.async.slots <- struct{}{}
	_, err := s.add(r, func(t seglog.Ticket) {
		s.async.list = append(s.async.list, pendingPut{t: t, done: done})
	})
	if err != nil {
		<-s.async.slots
		done(err)
		return
	}
	select {
	case s.async.kick <- struct{}{}:
	default:
	}
}

func (s *Store) commitLoop() {
	defer close(s.async.done)
	for {
		select {
		case <-s.async.kick:
			s.commitRound()
		case <-s.async.quit:
			s.commitRound()
			return
		}
	}
}

// commitRound waits until the newest listed record is durable, which makes every older one
// durable (the log writes and syncs in order), and reports the outcome to each. Records
// added meanwhile wait for the next round.
func (s *Store) commitRound() {
	s.mu.Lock()
	batch := s.async.list
	s.async.list = s.async.spare[:0]
	s.async.spare = nil
	s.mu.Unlock()
	if len(batch) > 0 {
		err := s.log.Wait(context.Background(), batch[len(batch)-1].t, true)
		if err != nil {
			err = fmt.Errorf("filestore: put: %w", err)
		}
		for i := range batch {
			batch[i].done(err)
			batch[i] = pendingPut{}
			<-s.async.slots
		}
	}
	s.mu.Lock()
	if s.async.spare == nil {
		s.async.spare = batch[:0]
	}
	s.mu.Unlock()
}

// Compile-time check.
var _ tern.AsyncStore = (*Store)(nil)
