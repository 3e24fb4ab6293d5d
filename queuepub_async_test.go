package tern

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/ternmq/tern/internal/brokertest"
)

// asyncGateQueue is an AsyncQueue and BatchAcker over a MemoryQueue whose "syncs" the test
// releases: EnqueueAsync holds each entry until release, then stores it and calls done.
type asyncGateQueue struct {
	*MemoryQueue
	mu      sync.Mutex
	held    []heldEntry
	acks    int // Ack calls
	batches int // AckBatch calls
}

type heldEntry struct {
	e    QueueEntry
	done func(error)
}

func (q *asyncGateQueue) EnqueueAsync(_ context.Context, e *QueueEntry, done func(error)) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held = append(q.held, heldEntry{QueueEntry{Message: CloneMessage(e.Message)}, done})
	return nil
}

// release settles every held entry, in order: stored and nil, or failed with err.
func (q *asyncGateQueue) release(err error) {
	q.mu.Lock()
	held := q.held
	q.held = nil
	q.mu.Unlock()
	for _, h := range held {
		if err == nil {
			if serr := q.Enqueue(context.Background(), &h.e); serr != nil {
				h.done(serr)
				continue
			}
		}
		h.done(err)
	}
}

func (q *asyncGateQueue) Ack(seq uint64) error {
	q.mu.Lock()
	q.acks++
	q.mu.Unlock()
	return q.MemoryQueue.Ack(seq)
}

func (q *asyncGateQueue) AckBatch(seqs []uint64) error {
	q.mu.Lock()
	q.batches++
	q.mu.Unlock()
	for _, seq := range seqs {
		if err := q.MemoryQueue.Ack(seq); err != nil {
			return err
		}
	}
	return nil
}

// PublishAsync returns before the queue has made the message durable, its token resolves
// only once it has, messages keep the order they were given in, and deliveries are
// acknowledged through AckBatch. Promise: "an asynchronous form lets one goroutine fill a
// group commit"; the token says stored only when stored.
func TestQueuePublisherPublishAsync(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	rx := newTestClient(t, b.URL)
	ch, _, err := rx.Subscribe(ctx, []TopicFilter{{Topic: "qpa/x", QoS: 1}}, SubAutoAck(), SubBuffer(1024))
	if err != nil {
		t.Fatal(err)
	}
	tx := newTestClient(t, b.URL)
	q := &asyncGateQueue{MemoryQueue: NewMemoryQueue()}
	p, err := NewQueuePublisher(tx, q)
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, p)
	const n = 300
	toks := make([]*QueueToken, n)
	for i := range n {
		if toks[i], err = p.PublishAsync(ctx, PublishOptions{Topic: "qpa/x", QoS: 1, Payload: seqPayload(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, tok := range toks {
		select {
		case <-tok.Done():
			t.Fatalf("token %d resolved before the queue stored the message", i)
		default:
		}
	}
	if _, err := p.PublishAsync(ctx, PublishOptions{Topic: "qpa/x", QoS: 0}); !errors.Is(err, ErrQueueQoS0) {
		t.Fatalf("QoS 0: %v, want ErrQueueQoS0", err)
	}
	q.release(nil)
	for i, tok := range toks {
		if err := tok.Wait(ctx); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	for i := range n {
		select {
		case m := <-ch:
			if got := payloadSeq(m.Payload); got != i {
				t.Fatalf("message %d arrived as number %d", i, got)
			}
		case <-ctx.Done():
			t.Fatalf("message %d never arrived", i)
		}
	}
	waitFor(t, func() bool { return p.Stats().Delivered == n && q.Stats().Depth == 0 })
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.acks != 0 || q.batches == 0 {
		t.Fatalf("%d Ack calls and %d AckBatch calls: deliveries not acknowledged in batches", q.acks, q.batches)
	}
}

// A store that fails resolves the token with its error; the place WithQueueMaxSize took is
// given back either way. Promise: every give-up is visible.
func TestQueuePublisherPublishAsyncFailure(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	tx := newTestClient(t, b.URL)
	q := &asyncGateQueue{MemoryQueue: NewMemoryQueue()}
	p, err := NewQueuePublisher(tx, q, WithQueueMaxSize(2))
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, p)
	var toks []*QueueToken
	for i := range 2 {
		tok, err := p.PublishAsync(ctx, PublishOptions{Topic: "qpa/f", QoS: 1, Payload: seqPayload(i)})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	if _, err := p.PublishAsync(ctx, PublishOptions{Topic: "qpa/f", QoS: 1}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third message with two pending and a limit of 2: %v, want ErrQueueFull", err)
	}
	boom := errors.New("disk on fire")
	q.release(boom)
	for _, tok := range toks {
		if err := tok.Wait(ctx); !errors.Is(err, boom) || !errors.Is(tok.Err(), boom) {
			t.Fatalf("token: %v, want the store's error", err)
		}
	}
	if _, err := p.PublishAsync(ctx, PublishOptions{Topic: "qpa/f", QoS: 1}); err != nil {
		t.Fatalf("after the failed stores freed their places: %v", err)
	}
}

func payloadSeq(b []byte) int {
	if len(b) != 8 {
		return -1
	}
	var n int
	for _, c := range b {
		n = n<<8 | int(c)
	}
	return n
}
