package filestore

import (
	"context"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog"
)

// Asynchronous puts. Put waits for its own sync, so a caller that puts records one after
// another (the client's read loop, storing the RecordReleased of each outbound QoS 2
// message on PUBREC, or the receipt of each inbound one) pays one fsync per record.
// PutAsync adds the record and returns; the store's committer (seglog.Committer, one
// goroutine per Store) reports each record once a sync covers it, so records added while
// one sync runs share the next.

// MaxPendingAsync is how many PutAsync records may wait for their sync at once; beyond it
// PutAsync blocks until a sync settles some. The client keeps far fewer in flight (one per
// unacknowledged inbound QoS 2 message, bounded by its Receive Maximum, and one per outbound
// QoS 2 message between PUBREC and PUBREL, bounded by the broker's).
const MaxPendingAsync = 1 << 16

func (s *Store) startCommitter() {
	s.async.Start(s.log, &s.mu, MaxPendingAsync, nil, "filestore: put")
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
	_ = s.async.Acquire(context.Background())
	_, err := s.add(r, func(t seglog.Ticket) {
		s.async.ListLocked(seglog.Pending{T: t, Done: done})
	})
	if err != nil {
		s.async.Release()
		done(err)
		return
	}
	s.async.Kick()
}

// Compile-time check.
var _ tern.AsyncStore = (*Store)(nil)
