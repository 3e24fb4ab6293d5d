package filequeue

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/brokertest"
)

// These tests run the tern.QueuePublisher on a file queue against real Mosquitto brokers
// whose configuration refuses the queued messages. Each names the promise it defends.

const backlog = 1000

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 20s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

func connect(t *testing.T, url string, opts ...tern.Option) *tern.Client {
	t.Helper()
	c, err := tern.New(append([]tern.Option{tern.WithBroker(url)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

func stopPublisher(t *testing.T, p *tern.QueuePublisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("close publisher: %v", err)
	}
}

// fill stores n 200-byte messages, as an earlier run of the program would have.
func fill(t *testing.T, q *Queue, topic string, n int) {
	t.Helper()
	for i := range n {
		payload := make([]byte, 200)
		binary.BigEndian.PutUint64(payload, uint64(i))
		e := tern.QueueEntry{Message: tern.PublishOptions{Topic: topic, QoS: 1, Payload: payload}}
		if err := q.Enqueue(context.Background(), &e); err != nil {
			t.Fatal(err)
		}
	}
}

// A message leaves the durable queue only when delivered, expired or given up by a policy
// the user set: a broker whose limits (max_packet_size, max_qos) refuse every queued
// message pauses the drain; after a restart every message is still on disk, and a broker
// without the limit receives them all.
func TestPublisherKeepsQueueUnderBrokerLimits(t *testing.T) {
	for name, extra := range map[string]string{
		"max_packet_size": "max_packet_size 100",
		"max_qos":         "max_qos 0",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			q := mustOpen(t, dir)
			fill(t, q, "lim/x", backlog)

			strict := brokertest.StartMosquitto(t, brokertest.Config{Extra: []string{extra}})
			c := connect(t, strict.URL)
			p, err := tern.NewQueuePublisher(c, q)
			if err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "LastError", func() bool { return p.Stats().LastError != nil })
			st := p.Stats()
			if !errors.Is(st.LastError, tern.ErrPacketTooLarge) && !errors.Is(st.LastError, tern.ErrQoSNotSupported) {
				t.Fatalf("LastError %v", st.LastError)
			}
			if st.Sent != 0 || st.DeadLettered != 0 || !st.Paused {
				t.Fatalf("stats %+v", st)
			}
			stopPublisher(t, p)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}

			q = mustOpen(t, dir)
			defer q.Close()
			if d := q.Stats().Depth; d != backlog {
				t.Fatalf("depth %d after reopening, want %d", d, backlog)
			}
			open := brokertest.StartMosquitto(t, brokertest.Config{})
			rx := connect(t, open.URL)
			ch, _, err := rx.Subscribe(context.Background(), []tern.TopicFilter{{Topic: "lim/#", QoS: 1}},
				tern.SubAutoAck(), tern.SubBuffer(backlog))
			if err != nil {
				t.Fatal(err)
			}
			p2, err := tern.NewQueuePublisher(connect(t, open.URL), q)
			if err != nil {
				t.Fatal(err)
			}
			defer stopPublisher(t, p2)
			seen := make(map[uint64]bool)
			for len(seen) < backlog {
				select {
				case m := <-ch:
					seen[binary.BigEndian.Uint64(m.Payload)] = true
				case <-time.After(20 * time.Second):
					t.Fatalf("received %d of %d; %+v", len(seen), backlog, p2.Stats())
				}
			}
			waitUntil(t, "depth 0", func() bool { return q.Stats().Depth == 0 })
		})
	}
}

// Given up under WithQueueMaxAttempts with no callback, a message is kept in the
// dead-letter store on disk, never deleted unseen; it survives a restart and can be read
// and removed. The broker's max_packet_size refuses every message.
func TestPublisherDeadLettersOnDisk(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{Extra: []string{"max_packet_size 100"}})
	dir := t.TempDir()
	q := mustOpen(t, dir)
	const n = 20
	fill(t, q, "denied/x", n)
	p, err := tern.NewQueuePublisher(connect(t, b.URL), q, tern.WithQueueMaxAttempts(2),
		tern.WithQueueRetryBackoff(tern.ConstantBackoff(time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "all set aside", func() bool { return p.Stats().DeadLettered == n })
	if st := p.Stats(); st.Depth != 0 || st.Pauses == 0 {
		t.Fatalf("stats %+v", st)
	}
	stopPublisher(t, p)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = mustOpen(t, dir)
	defer q.Close()
	dls, err := q.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != n {
		t.Fatalf("%d dead letters after reopening, want %d", len(dls), n)
	}
	for i, dl := range dls {
		if dl.Entry.Seq != uint64(i+1) || binary.BigEndian.Uint64(dl.Entry.Message.Payload) != uint64(i) ||
			dl.Entry.Message.Topic != "denied/x" || dl.Reason == "" || dl.Time.IsZero() {
			t.Fatalf("dead letter %d: %+v", i, dl)
		}
	}
	for _, dl := range dls {
		if err := q.RemoveDeadLetter(dl.Entry.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if dls, err := q.DeadLetters(); err != nil || len(dls) != 0 {
		t.Fatalf("after removal: %d, %v", len(dls), err)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "dead", "*.seg")); len(segs) > 1 {
		t.Fatalf("dead-letter segments left: %v", segs)
	}
}

// A dead letter is stored once per sequence number, written before the queue's
// acknowledgement (a crash between leaves both), and a removal survives a restart.
func TestDeadLetterStoreRestart(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dead")); !os.IsNotExist(err) {
		t.Fatalf("dead-letter directory created before any dead letter: %v", err)
	}
	fill(t, q, "t", 3)
	es, err := q.Read(0, 3, nil)
	if err != nil || len(es) != 3 {
		t.Fatal(len(es), err)
	}
	for _, e := range es {
		if err := q.DeadLetter(e, errors.New("why")); err != nil {
			t.Fatal(err)
		}
	}
	// Crash before the acknowledgement: set aside again after restart.
	if err := q.DeadLetter(es[0], errors.New("again")); err != nil {
		t.Fatal(err)
	}
	if err := q.RemoveDeadLetter(2); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = mustOpen(t, dir)
	defer q.Close()
	if err := q.DeadLetter(es[0], errors.New("after restart")); err != nil {
		t.Fatal(err)
	}
	dls, err := q.DeadLetters()
	if err != nil || len(dls) != 2 || dls[0].Entry.Seq != 1 || dls[1].Entry.Seq != 3 || dls[0].Reason != "why" {
		t.Fatalf("%+v %v", dls, err)
	}
	if d := q.Stats().Depth; d != 3 {
		t.Fatalf("depth %d: dead-lettering alone must not acknowledge", d)
	}
}
