package tern

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// QueueEntry is one message in a PublisherQueue.
type QueueEntry struct {
	Seq     uint64         // assigned by Enqueue: strictly increasing, never reused
	Time    time.Time      // when it was enqueued, assigned by Enqueue
	Message PublishOptions // QoS 1 or 2
}

// QueueStats describes a queue's backlog.
type QueueStats struct {
	Depth  int       // entries stored and not yet acknowledged
	Bytes  int64     // their approximate size
	Oldest time.Time // enqueue time of the oldest; zero when empty
}

// PublisherQueue stores messages for a QueuePublisher until they are delivered. The
// filequeue package provides one on disk; NewMemoryQueue one in memory. Implementations are
// safe for concurrent use.
type PublisherQueue interface {
	// Enqueue stores e, assigning e.Seq and e.Time, and returns once it is as durable as the
	// queue promises. The message's payload and fields are copied.
	Enqueue(ctx context.Context, e *QueueEntry) error
	// Read appends to dst up to n unacknowledged entries with Seq greater than after, in Seq
	// order, without waiting. The entries' memory belongs to the caller.
	Read(after uint64, n int, dst []QueueEntry) ([]QueueEntry, error)
	// Ack marks an entry done (delivered, expired or set aside): Read never returns it again,
	// not even after a restart. Acks may come in any order; acknowledging twice is harmless.
	Ack(seq uint64) error
	// Notify returns a channel that receives a value after entries are enqueued.
	Notify() <-chan struct{}
	// Stats describes the backlog.
	Stats() QueueStats
	// Close releases the queue. Stored entries stay stored.
	Close() error
}

// AsyncQueue is implemented by a PublisherQueue that can store an entry without making its
// caller wait for it to become durable, so that one goroutine can have many entries share
// one sync. QueuePublisher.PublishAsync uses it; filequeue.Queue implements it.
type AsyncQueue interface {
	// EnqueueAsync assigns e.Seq and e.Time and stores e as Enqueue does, but may return
	// before e is durable. done is then called exactly once, from the queue's own goroutine,
	// with nil once e is as durable as Enqueue would have made it, or with the error that
	// stopped it; done must not block. When EnqueueAsync returns an error, done is not
	// called. It blocks, bounded by ctx, only while the queue holds as many entries waiting
	// for their sync as it allows.
	EnqueueAsync(ctx context.Context, e *QueueEntry, done func(error)) error
}

// BatchAcker is implemented by a PublisherQueue that can acknowledge many entries at about
// the cost of one. The QueuePublisher uses it when several outcomes are known at once.
type BatchAcker interface {
	// AckBatch acknowledges every entry in seqs as Ack would; seqs is not kept.
	AckBatch(seqs []uint64) error
}

// ErrQueueClosed is returned by a queue or QueuePublisher used after Close.
var ErrQueueClosed = errors.New("tern: queue closed")

// DeadLetterQueue is implemented by a PublisherQueue that can keep the messages a
// QueuePublisher gives up on (WithQueueMaxAttempts, DropOldest, messages no broker can take)
// when no WithDeadLetter callback is set, so that nothing leaves the queue unseen.
// MemoryQueue keeps them in memory, filequeue.Queue in a log of its own on disk.
type DeadLetterQueue interface {
	// DeadLetter stores e with the reason it was given up, as durably as the queue stores
	// entries, before it returns; the publisher acknowledges e in the queue only after that,
	// so a crash in between leaves the message in both places, never in neither. Storing an
	// entry whose Seq is already stored keeps the first copy. Safe for concurrent use.
	DeadLetter(e QueueEntry, reason error) error
}

// DeadLetter is a message a QueuePublisher gave up on, as kept by a DeadLetterQueue.
type DeadLetter struct {
	Entry  QueueEntry // as it was stored, Seq and Time included
	Reason string     // the error that made the publisher give up, as text
	Time   time.Time  // when it was set aside
}

// MemoryQueue is a PublisherQueue in memory: it survives outages but not the process.
type MemoryQueue struct {
	mu      sync.Mutex
	entries []QueueEntry // unacknowledged, in Seq order
	acked   map[uint64]bool
	next    uint64
	bytes   int64
	closed  bool
	notify  chan struct{}
	dead    []DeadLetter // in the order they were set aside
}

// NewMemoryQueue returns an empty MemoryQueue.
func NewMemoryQueue() *MemoryQueue {
	return &MemoryQueue{acked: make(map[uint64]bool), notify: make(chan struct{}, 1)}
}

func entrySize(m *PublishOptions) int64 {
	n := len(m.Topic) + len(m.Payload) + len(m.ContentType) + len(m.ResponseTopic) + len(m.CorrelationData)
	for _, up := range m.UserProperties {
		n += len(up.Key) + len(up.Value)
	}
	return int64(n + 64)
}

// CloneMessage returns a deep copy of m: a queue keeps nothing that belongs to its caller.
func CloneMessage(m PublishOptions) PublishOptions {
	m.Payload = slices.Clone(m.Payload)
	m.CorrelationData = slices.Clone(m.CorrelationData)
	m.UserProperties = slices.Clone(m.UserProperties)
	return m
}

// Enqueue implements PublisherQueue.
func (q *MemoryQueue) Enqueue(_ context.Context, e *QueueEntry) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrQueueClosed
	}
	q.next++
	e.Seq, e.Time = q.next, time.Now()
	stored := *e
	stored.Message = CloneMessage(e.Message)
	q.entries = append(q.entries, stored)
	q.bytes += entrySize(&stored.Message)
	signal(q.notify)
	return nil
}

// Read implements PublisherQueue.
func (q *MemoryQueue) Read(after uint64, n int, dst []QueueEntry) ([]QueueEntry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return dst, ErrQueueClosed
	}
	i, _ := slices.BinarySearchFunc(q.entries, after+1, func(e QueueEntry, seq uint64) int {
		switch {
		case e.Seq < seq:
			return -1
		case e.Seq > seq:
			return 1
		}
		return 0
	})
	for ; i < len(q.entries) && n > 0; i++ {
		e := q.entries[i]
		if q.acked[e.Seq] {
			continue
		}
		e.Message = CloneMessage(e.Message)
		dst = append(dst, e)
		n--
	}
	return dst, nil
}

// Ack implements PublisherQueue.
func (q *MemoryQueue) Ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrQueueClosed
	}
	if seq == 0 || seq > q.next || q.acked[seq] {
		return nil
	}
	if len(q.entries) == 0 || seq < q.entries[0].Seq {
		return nil // already compacted away
	}
	q.acked[seq] = true
	// Drop the acknowledged prefix so memory follows the backlog.
	for len(q.entries) > 0 && q.acked[q.entries[0].Seq] {
		delete(q.acked, q.entries[0].Seq)
		q.bytes -= entrySize(&q.entries[0].Message)
		q.entries[0] = QueueEntry{}
		q.entries = q.entries[1:]
	}
	return nil
}

// Notify implements PublisherQueue.
func (q *MemoryQueue) Notify() <-chan struct{} { return q.notify }

// Stats implements PublisherQueue.
func (q *MemoryQueue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := QueueStats{Depth: len(q.entries) - len(q.acked), Bytes: q.bytes}
	for _, e := range q.entries {
		if !q.acked[e.Seq] {
			st.Oldest = e.Time
			break
		}
	}
	return st
}

// Close implements PublisherQueue.
func (q *MemoryQueue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	return nil
}

// DeadLetter implements DeadLetterQueue: the message is kept in memory until
// RemoveDeadLetter. Nothing bounds their number; read and remove them.
func (q *MemoryQueue) DeadLetter(e QueueEntry, reason error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrQueueClosed
	}
	for _, d := range q.dead {
		if d.Entry.Seq == e.Seq {
			return nil
		}
	}
	e.Message = CloneMessage(e.Message)
	d := DeadLetter{Entry: e, Time: time.Now()}
	if reason != nil {
		d.Reason = reason.Error()
	}
	q.dead = append(q.dead, d)
	return nil
}

// DeadLetters returns copies of the dead letters, oldest first. Cost: one copy of each.
func (q *MemoryQueue) DeadLetters() ([]DeadLetter, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, ErrQueueClosed
	}
	out := make([]DeadLetter, len(q.dead))
	for i, d := range q.dead {
		d.Entry.Message = CloneMessage(d.Entry.Message)
		out[i] = d
	}
	return out, nil
}

// RemoveDeadLetter forgets the dead letter with sequence number seq; removing one that is
// not there is harmless.
func (q *MemoryQueue) RemoveDeadLetter(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrQueueClosed
	}
	q.dead = slices.DeleteFunc(q.dead, func(d DeadLetter) bool { return d.Entry.Seq == seq })
	return nil
}
