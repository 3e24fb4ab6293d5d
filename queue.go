package tern

import (
	"context"
	"sync"
	"sync/atomic"
)

// DropPolicy decides what a subscription does with a new message when its buffer is full.
type DropPolicy uint8

const (
	// Block loses nothing: a message that finds the buffer full waits for the consumer.
	// A QoS 1/2 message waits in the subscription's hold list, unacknowledged, while the
	// read loop goes on, so a stalled consumer does not stall the client's own publishes,
	// pings or other subscriptions; the broker stops sending once the Receive Maximum this
	// client advertised is used up, which bounds the hold (capped at twice the Receive
	// Maximum per subscription). Past that cap (a broker that overruns the window) and
	// for QoS 0, which no window bounds, the read loop itself waits for the consumer, and
	// with it everything the connection carries (Stats().ReadStalls counts these waits).
	// A consumer that must publish while it is behind should therefore subscribe at QoS 1
	// or 2, or use a Drop policy for QoS 0 streams.
	Block DropPolicy = iota
	// DropNewest discards the message that does not fit, acknowledging it to the broker.
	DropNewest
	// DropOldest discards the oldest buffered message, acknowledging it, to make room.
	DropOldest
)

func (p DropPolicy) String() string {
	switch p {
	case Block:
		return "block"
	case DropNewest:
		return "drop-newest"
	case DropOldest:
		return "drop-oldest"
	}
	return "unknown"
}

// Queue is a bounded FIFO of messages with a drop policy, the buffer behind SubscribeQueue
// and SubscribeCallback. Pop is safe for concurrent use by several consumers.
type Queue[T any] struct {
	mu      sync.Mutex
	items   []T // ring buffer
	head, n int
	closed  bool
	ready   chan struct{} // cap 1: an item may be waiting; closed when the queue closes
	space   chan struct{} // cap 1: room may be free
	policy  DropPolicy
	onDrop  func(T)
	quiet   bool          // items were added by offerQuiet and wake has not run since
	parks   atomic.Uint64 // times Pop waited for an item (a wake-up each); for tests
}

// NewQueue returns an empty queue of size items (at least 1) under policy, for programs that
// feed their own goroutines: producers call Push, consumers Pop or TryPop, and Close ends it.
// onDrop, if not nil, receives each item a drop policy discards, on the producer's goroutine
// and outside the queue's lock. Memory: size slots, allocated here. All methods are safe for
// concurrent use.
func NewQueue[T any](size int, policy DropPolicy, onDrop func(T)) *Queue[T] {
	return newQueue(max(size, 1), min(policy, DropOldest), onDrop)
}

// Push adds v under the queue's policy. With Block it waits for room until ctx ends (then it
// returns ctx's error and v is not queued). With DropNewest a full queue discards v, hands it
// to onDrop and returns ErrQueueFull; with DropOldest it discards the oldest item instead and
// returns nil. After Close it returns ErrQueueClosed.
func (q *Queue[T]) Push(ctx context.Context, v T) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch q.push(v, ctx.Done(), nil) {
	case pushDropped:
		return ErrQueueFull
	case pushStopped:
		if err := ctx.Err(); err != nil {
			return err
		}
		return ErrQueueClosed
	}
	return nil
}

// Close ends the queue: Push fails with ErrQueueClosed, and Pop returns what is buffered,
// then reports ok == false. Idempotent. A queue returned by SubscribeQueue is closed by its
// subscription: end that with Unsubscribe, since closing it directly makes the
// subscription's later messages be acknowledged and discarded.
func (q *Queue[T]) Close() { q.close() }

func newQueue[T any](size int, policy DropPolicy, onDrop func(T)) *Queue[T] {
	return &Queue[T]{
		items:  make([]T, size),
		ready:  make(chan struct{}, 1),
		space:  make(chan struct{}, 1),
		policy: policy,
		onDrop: onDrop,
	}
}

// Len returns the number of buffered messages.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Cap returns the buffer size.
func (q *Queue[T]) Cap() int { return len(q.items) }

// Pop removes and returns the oldest message, waiting for one until ctx ends. ok is false
// when the queue is closed and empty (the subscription ended) or ctx ended.
func (q *Queue[T]) Pop(ctx context.Context) (v T, ok bool) {
	for {
		q.mu.Lock()
		if q.n > 0 {
			v = q.popLocked()
			if q.n > 0 && !q.closed {
				// Pass the wake-up on: another consumer may be waiting for the rest. Under
				// the lock, so it cannot race with close; once closed, ready is closed
				// and wakes everyone by itself.
				signal(q.ready)
			}
			q.mu.Unlock()
			return v, true
		}
		if q.closed {
			q.mu.Unlock()
			return v, false
		}
		q.mu.Unlock()
		q.parks.Add(1)
		select {
		case <-q.ready:
		case <-ctx.Done():
			return v, false
		}
	}
}

// TryPop returns the oldest message without waiting.
func (q *Queue[T]) TryPop() (v T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return v, false
	}
	return q.popLocked(), true
}

func (q *Queue[T]) popLocked() T {
	var zero T
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head = (q.head + 1) % len(q.items)
	q.n--
	signal(q.space)
	return v
}

// signal wakes one waiter without blocking; a pending signal is enough for any number of
// events because waiters re-check the state under the lock.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// pushResult says what push did with an item.
type pushResult uint8

const (
	pushQueued  pushResult = iota
	pushDropped            // discarded by DropNewest and handed to onDrop
	pushStopped            // not queued: the queue is closed or stop was closed
)

// push adds v under the queue's policy. With Block it waits until there is room or a stop
// channel is closed. Dropped items, v or the oldest, go to onDrop outside the lock.
func (q *Queue[T]) push(v T, stop, stop2 <-chan struct{}) pushResult {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return pushStopped
		}
		if q.n < len(q.items) {
			q.items[(q.head+q.n)%len(q.items)] = v
			q.n++
			signal(q.ready)
			q.mu.Unlock()
			return pushQueued
		}
		switch q.policy {
		case DropNewest:
			q.mu.Unlock()
			q.drop(v)
			return pushDropped
		case DropOldest:
			old := q.popLocked()
			q.mu.Unlock()
			q.drop(old)
			continue
		}
		// Full: a consumer still asleep after offerQuiet must run to make room.
		q.quiet = false
		signal(q.ready)
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-stop:
			return pushStopped
		case <-stop2:
			return pushStopped
		}
	}
}

// offerQuiet adds v if there is room, without waiting, whatever the policy and without
// waking a consumer: the read loop adds a whole read batch this
// way and calls wake once at its end, so a consumer that keeps up is woken once per batch
// rather than once per message. first reports that this is the first quiet item since the
// last wake, so the caller knows to schedule one. A consumer that is running sees the items
// at once; only a parked one waits for the wake.
func (q *Queue[T]) offerQuiet(v T) (ok, first bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.n == len(q.items) {
		return false, false
	}
	q.items[(q.head+q.n)%len(q.items)] = v
	q.n++
	first = !q.quiet
	q.quiet = true
	return true, first
}

// wake wakes a consumer for the items offerQuiet added.
func (q *Queue[T]) wake() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.quiet {
		q.quiet = false
		if !q.closed {
			signal(q.ready)
		}
	}
}

func (q *Queue[T]) drop(v T) {
	if q.onDrop != nil {
		q.onDrop(v)
	}
}

// close ends the queue: Pop drains what is buffered, then reports ok == false.
func (q *Queue[T]) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	close(q.ready) // wakes every waiting Pop for good; push never signals a closed queue
}
