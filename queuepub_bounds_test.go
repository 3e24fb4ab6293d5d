package tern

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// closeUnacked closes a publisher whose peer never acknowledges what is in flight.
func closeUnacked(t *testing.T, qp *QueuePublisher) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := qp.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("close: %v", err)
		}
	})
}

// Retry bookkeeping is kept only for entries being retried: a message refused once and
// then delivered leaves nothing behind.
func TestQueuePublisherAttemptsBounded(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{ReceiveMaximum: 10})
	q := NewMemoryQueue()
	const n = 20
	fillQueue(t, q, n)
	qp, err := NewQueuePublisher(c, q, WithQueueRetryBackoff(ConstantBackoff(time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, qp)
	refused := make(map[uint64]bool)
	for delivered := 0; delivered < n; {
		pub := readPublish(t, pc)
		v := binary.BigEndian.Uint64(pub.Payload)
		if !refused[v] {
			refused[v] = true
			pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID, ReasonCode: packet.QuotaExceeded})
			continue
		}
		pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
		delivered++
	}
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
	if k := qp.trackedEntries(); k != 0 {
		t.Fatalf("%d entries still tracked after every message was delivered", k)
	}
}

// gatedQueue holds every Enqueue until the gate opens, so that concurrent Publish calls
// are all between their size check and their enqueue at once.
type gatedQueue struct {
	*MemoryQueue
	gate    chan struct{}
	arrived atomic.Int32
}

func (g *gatedQueue) Enqueue(ctx context.Context, e *QueueEntry) error {
	g.arrived.Add(1)
	<-g.gate
	return g.MemoryQueue.Enqueue(ctx, e)
}

// WithQueueMaxSize holds under concurrent Publish calls, and the enqueues it admits still
// run concurrently (a file queue shares one fsync among them).
func TestQueuePublisherMaxSizeConcurrent(t *testing.T) {
	p := newPeer(t)
	c, _, _ := connectPeer(t, p, &packet.Connack{ReceiveMaximum: 1})
	g := &gatedQueue{MemoryQueue: NewMemoryQueue(), gate: make(chan struct{})}
	const max, callers = 5, 20
	qp, err := NewQueuePublisher(c, g, WithQueueMaxSize(max))
	if err != nil {
		t.Fatal(err)
	}
	closeUnacked(t, qp)
	var full atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := qp.Publish(testCtx(t), PublishOptions{Topic: "m", QoS: 1, Payload: seqPayload(i)})
			if errors.Is(err, ErrQueueFull) {
				full.Add(1)
				return
			}
			errs <- err
		}()
	}
	waitFor(t, func() bool { return int(g.arrived.Load()+full.Load()) == callers })
	if a := g.arrived.Load(); a != max {
		t.Errorf("%d enqueues admitted at once, want %d", a, max)
	}
	close(g.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if d := g.Stats().Depth; d > max {
		t.Fatalf("depth %d above the maximum %d", d, max)
	}
}

// DropOldest never drops a message handed to the client: it drops the oldest one not in
// flight, and refuses with ErrQueueFull when every stored message is in flight.
func TestQueuePublisherDropOldestSkipsInFlight(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{ReceiveMaximum: 1})
	ctx := testCtx(t)
	dead := make(chan QueueEntry, 4)
	q := NewMemoryQueue()
	qp, err := NewQueuePublisher(c, q, WithQueueMaxSize(3), WithQueueDropPolicy(DropOldest),
		WithDeadLetter(func(e QueueEntry, err error) { dead <- e }))
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, qp)
	pub := func(i int) error {
		return qp.Publish(ctx, PublishOptions{Topic: "m", QoS: 1, Payload: seqPayload(i)})
	}
	if err := pub(0); err != nil {
		t.Fatal(err)
	}
	first := readPublish(t, pc) // message 0 is in flight and stays so
	for i := 1; i <= 3; i++ {
		if err := pub(i); err != nil {
			t.Fatal(err)
		}
	}
	var dropped uint64
	select {
	case e := <-dead:
		dropped = binary.BigEndian.Uint64(e.Message.Payload)
	case <-time.After(10 * time.Second):
		t.Fatal("nothing dropped")
	}
	if dropped == 0 {
		t.Fatal("dropped message 0, which was in flight")
	}
	pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: first.PacketID})
	for range 2 {
		m := readPublish(t, pc)
		if v := binary.BigEndian.Uint64(m.Payload); v == dropped {
			t.Fatalf("dropped message %d was sent", v)
		}
		pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: m.PacketID})
	}
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
}

// With every stored message in flight, DropOldest has nothing it may drop.
func TestQueuePublisherDropOldestAllInFlight(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{ReceiveMaximum: 1})
	ctx := testCtx(t)
	q := NewMemoryQueue()
	qp, err := NewQueuePublisher(c, q, WithQueueMaxSize(1), WithQueueDropPolicy(DropOldest),
		WithDeadLetter(func(e QueueEntry, err error) { t.Errorf("dead letter %d: %v", e.Seq, err) }))
	if err != nil {
		t.Fatal(err)
	}
	closeUnacked(t, qp)
	if err := qp.Publish(ctx, PublishOptions{Topic: "m", QoS: 1, Payload: seqPayload(0)}); err != nil {
		t.Fatal(err)
	}
	readPublish(t, pc)
	if err := qp.Publish(ctx, PublishOptions{Topic: "m", QoS: 1, Payload: seqPayload(1)}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("got %v, want ErrQueueFull", err)
	}
	if d := q.Stats().Depth; d != 1 {
		t.Fatalf("depth %d", d)
	}
}

// trackedEntries is the number of entries the publisher keeps state for.
func (p *QueuePublisher) trackedEntries() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.busy) + len(p.dropped) + len(p.retry)
}
