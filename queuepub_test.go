package tern

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

func seqPayload(i int) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(i))
	return b
}

func closePublisher(t *testing.T, p *QueuePublisher) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("close queue publisher: %v", err)
		}
	})
}

// Messages published through the queue arrive in order, across connection cuts.
func TestQueuePublisherInOrderAcrossCuts(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	proxy := faultproxy.New(t, b.Addr)
	ctx := testCtx(t)
	rx := newTestClient(t, b.URL)
	ch, _, err := rx.Subscribe(ctx, []TopicFilter{{Topic: "qp/#", QoS: 2}}, SubAutoAck(), SubBuffer(4096))
	if err != nil {
		t.Fatal(err)
	}
	tx := newTestClient(t, proxy.URL(), WithClientID("qp-tx"), WithSessionExpiry(time.Hour),
		WithReconnectBackoff(ConstantBackoff(5*time.Millisecond)))
	q := NewMemoryQueue()
	p, err := NewQueuePublisher(tx, q)
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, p)
	const n = 2000
	for i := range n {
		qos := byte(1 + i%2)
		if err := p.Publish(ctx, PublishOptions{Topic: "qp/x", QoS: qos, Payload: seqPayload(i)}); err != nil {
			t.Fatal(err)
		}
		if i%500 == 250 {
			proxy.Cut()
		}
	}
	seen := make(map[uint64]int)
	last := -1
	reordered := 0
	for len(seen) < n {
		select {
		case m := <-ch:
			v := binary.BigEndian.Uint64(m.Payload)
			seen[v]++
			if int(v) < last {
				reordered++
			}
			last = int(v)
		case <-time.After(20 * time.Second):
			t.Fatalf("received %d of %d; publisher %+v", len(seen), n, p.Stats())
		}
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	t.Logf("duplicates %d, out of order %d (resends after cuts), stats %+v", dups, reordered, p.Stats())
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
}

func TestQueuePublisherRefusesQoS0AndInvalid(t *testing.T) {
	p := newPeer(t)
	c, _, _ := connectPeer(t, p, &packet.Connack{})
	qp, err := NewQueuePublisher(c, NewMemoryQueue())
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, qp)
	ctx := testCtx(t)
	if err := qp.Publish(ctx, PublishOptions{Topic: "a"}); !errors.Is(err, ErrQueueQoS0) {
		t.Fatalf("QoS 0: %v", err)
	}
	if err := qp.Publish(ctx, PublishOptions{Topic: "a/#", QoS: 1}); !errors.Is(err, ErrInvalidTopic) {
		t.Fatalf("bad topic: %v", err)
	}
}

// A full queue refuses new messages (DropNewest) or drops the oldest (DropOldest), which
// reaches the dead-letter callback.
func TestQueuePublisherMaxSize(t *testing.T) {
	p := newPeer(t)
	c, _, _ := connectPeer(t, p, &packet.Connack{ReceiveMaximum: 1})
	ctx := testCtx(t)

	var mu sync.Mutex
	var dead []error
	qNewest := NewMemoryQueue()
	qp, err := NewQueuePublisher(c, qNewest, WithQueueMaxSize(3))
	if err != nil {
		t.Fatal(err)
	}
	// The peer never acknowledges: closing gives up on what is in flight when ctx ends.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := qp.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("close: %v", err)
		}
	}()
	// Nothing is acknowledged by the peer, so the queue only grows.
	for i := range 3 {
		if err := qp.Publish(ctx, PublishOptions{Topic: "m", QoS: 1, Payload: seqPayload(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := qp.Publish(ctx, PublishOptions{Topic: "m", QoS: 1}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("got %v, want ErrQueueFull", err)
	}

	qOldest := NewMemoryQueue()
	qp2, err := NewQueuePublisher(c, qOldest, WithQueueMaxSize(2), WithQueueDropPolicy(DropOldest),
		WithDeadLetter(func(e QueueEntry, err error) { mu.Lock(); dead = append(dead, err); mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		qp2.Close(ctx)
	}()
	// The drain hands entries to the client as they come, and an entry in flight is never
	// dropped: a Publish finding every stored entry in flight is refused with ErrQueueFull.
	// Whatever the timing, every accepted message is stored or dropped (dead-lettered).
	accepted := 0
	for i := range 4 {
		err := qp2.Publish(ctx, PublishOptions{Topic: "m", QoS: 1, Payload: seqPayload(i)})
		switch {
		case err == nil:
			accepted++
		case !errors.Is(err, ErrQueueFull):
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	d := qOldest.Stats().Depth
	if d != 2 || accepted != d+len(dead) {
		t.Fatalf("depth %d, accepted %d, dropped %d", d, accepted, len(dead))
	}
	for _, err := range dead {
		if !errors.Is(err, ErrDropped) {
			t.Fatalf("dead letters %v", dead)
		}
	}
}

// Expired messages go to the dead-letter callback; the others carry their remaining
// lifetime as Message Expiry.
func TestQueuePublisherTTL(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	q := NewMemoryQueue()
	// An entry enqueued "long ago": it must not be sent.
	old := &QueueEntry{Message: PublishOptions{Topic: "ttl", QoS: 1, Payload: []byte("old")}}
	q.Enqueue(context.Background(), old)
	q.mu.Lock()
	q.entries[0].Time = time.Now().Add(-time.Hour)
	q.mu.Unlock()
	dead := make(chan error, 1)
	qp, err := NewQueuePublisher(c, q, WithQueueTTL(time.Minute),
		WithDeadLetter(func(e QueueEntry, err error) { dead <- err }))
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, qp)
	if err := qp.Publish(testCtx(t), PublishOptions{Topic: "ttl", QoS: 1, Payload: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	pub := readPublish(t, pc)
	if string(pub.Payload) != "new" || pub.MessageExpiry == 0 || pub.MessageExpiry > 60 {
		t.Fatalf("sent %q with expiry %d", pub.Payload, pub.MessageExpiry)
	}
	if err := <-dead; !errors.Is(err, ErrMessageExpired) {
		t.Fatalf("dead letter %v", err)
	}
	pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
}

// Under WithQueueMaxAttempts every refusal counts, transient or not: after the limit the
// message is set aside with ErrPoison and the queue moves on. Nothing loops forever.
func TestQueuePublisherPoison(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	dead := make(chan error, 2)
	qp, err := NewQueuePublisher(c, NewMemoryQueue(), WithQueueMaxAttempts(3),
		WithQueueRetryBackoff(ConstantBackoff(time.Millisecond)),
		WithDeadLetter(func(e QueueEntry, err error) { dead <- err }))
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, qp)
	ctx := testCtx(t)
	for _, code := range []packet.ReasonCode{packet.NotAuthorized, packet.QuotaExceeded} {
		qp.Publish(ctx, PublishOptions{Topic: "refused", QoS: 1})
		for range 3 {
			pub := readPublish(t, pc)
			pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID, ReasonCode: code})
		}
		if err := <-dead; !errors.Is(err, ErrPoison) || !errors.Is(err, &ReasonCodeError{Code: code}) {
			t.Fatalf("dead letter %v", err)
		}
	}
	// The callback runs before the entry is acknowledged and counted.
	waitFor(t, func() bool { s := qp.Stats(); return s.DeadLettered == 2 && s.Depth == 0 })
	if s := qp.Stats(); s.Retries != 4 || s.Pauses != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// With no dead-letter callback, a message given up under WithQueueMaxAttempts is kept in
// the queue's dead-letter store: never deleted unseen.
func TestQueuePublisherDeadLetterStore(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	q := NewMemoryQueue()
	qp, err := NewQueuePublisher(c, q, WithQueueMaxAttempts(2),
		WithQueueRetryBackoff(ConstantBackoff(time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, qp)
	if err := qp.Publish(testCtx(t), PublishOptions{Topic: "dl", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		pub := readPublish(t, pc)
		pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID, ReasonCode: packet.UnspecifiedError})
	}
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
	dls, err := q.DeadLetters()
	if err != nil || len(dls) != 1 || string(dls[0].Entry.Message.Payload) != "x" || dls[0].Entry.Seq != 1 {
		t.Fatalf("dead letters %+v, %v", dls, err)
	}
	if !strings.Contains(dls[0].Reason, "unspecified") {
		t.Fatalf("reason %q", dls[0].Reason)
	}
	if err := q.RemoveDeadLetter(1); err != nil {
		t.Fatal(err)
	}
	if dls, _ := q.DeadLetters(); len(dls) != 0 {
		t.Fatalf("after removal: %+v", dls)
	}
}

// A refusal configuration can fix pauses the drain: the hook hears of it, Stats says so,
// and the message is sent again after the backoff.
func TestQueuePublisherPauseHook(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	paused := make(chan error, 1)
	q := NewMemoryQueue()
	qp, err := NewQueuePublisher(c, q, WithQueueRetryBackoff(ConstantBackoff(time.Hour)),
		WithQueueOnPause(func(e QueueEntry, err error) { paused <- err }))
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, qp)
	qp.Publish(testCtx(t), PublishOptions{Topic: "acl", QoS: 1})
	pub := readPublish(t, pc)
	pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID, ReasonCode: packet.NotAuthorized})
	if err := <-paused; !errors.Is(err, &ReasonCodeError{Code: packet.NotAuthorized}) {
		t.Fatalf("pause hook: %v", err)
	}
	if st := qp.Stats(); !st.Paused || st.Pauses != 1 || st.Depth != 1 || st.LastError == nil {
		t.Fatalf("stats %+v", st)
	}
	if !pc.quiet(50 * time.Millisecond) {
		t.Fatal("sent again during an hour-long pause")
	}
}

// A new publisher on the same queue sends what the previous one left.
func TestQueuePublisherResumesQueue(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	q := NewMemoryQueue()
	for i := range 3 {
		q.Enqueue(context.Background(), &QueueEntry{Message: PublishOptions{Topic: "r", QoS: 1, Payload: seqPayload(i)}})
	}
	qp, err := NewQueuePublisher(c, q)
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, qp)
	for i := range 3 {
		pub := readPublish(t, pc)
		if binary.BigEndian.Uint64(pub.Payload) != uint64(i) {
			t.Fatalf("out of order: %v", pub.Payload)
		}
		pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
	}
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
}
