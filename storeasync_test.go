package tern_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/seglog/faultfs"
)

// heldSyncs is a filestore on a faultfs whose fsyncs, once armed, wait until released and
// then return err.
type heldSyncs struct {
	fs      *faultfs.FS
	store   *filestore.Store
	release chan struct{}
	once    sync.Once
}

func openHeldSyncs(t *testing.T) *heldSyncs {
	t.Helper()
	h := &heldSyncs{fs: faultfs.New(filestore.OSFS()), release: make(chan struct{})}
	st, err := filestore.Open(t.TempDir(), filestore.WithFS(h.fs))
	if err != nil {
		t.Fatal(err)
	}
	h.store = st
	t.Cleanup(func() { st.Close() })
	t.Cleanup(h.open) // runs first: nothing may stay blocked in a sync
	return h
}

// arm makes every later fsync wait for open and then fail with err (nil: succeed).
func (h *heldSyncs) arm(err error) {
	h.fs.SetFault(func(op faultfs.Op, path string) error {
		if op != faultfs.OpSync {
			return nil
		}
		<-h.release
		return err
	})
}

func (h *heldSyncs) open() { h.once.Do(func() { close(h.release) }) }

// pollUntil waits for cond with a deadline (the counters it reads have no event to wait on).
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 10s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling with a deadline, not synchronisation
	}
}

func receive(t *testing.T, ctx context.Context, msgs <-chan *tern.Message, what string) *tern.Message {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-ctx.Done():
		t.Fatalf("%s not delivered: the read loop waits for the store", what)
		return nil
	}
}

// With a filestore (an AsyncStore), the receipt of an inbound QoS 2 message commits while
// the read loop goes on: both messages are delivered although no fsync can finish. PUBREC
// waits for the receipt to be durable even after the application acknowledged the message
// (the write-ahead contract: "an inbound QoS 2 PUBLISH is Put before PUBREC is written"),
// and the PUBACK of the QoS 1 message behind it waits too: acknowledgements leave in
// arrival order (MQTT 5 §4.6).
func TestAsyncReceiptHoldsAcksUntilDurable(t *testing.T) {
	broker := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := openHeldSyncs(t)
	sub := mustConnect(t, tern.WithBroker(broker.URL), tern.WithStore(h.store), tern.WithStats())
	t.Cleanup(func() { disconnect(t, sub) })
	msgs, _, err := sub.Subscribe(ctx, []tern.TopicFilter{{Topic: "rcpt/#", QoS: 2}})
	if err != nil {
		t.Fatal(err)
	}
	pub := mustConnect(t, tern.WithBroker(broker.URL))
	t.Cleanup(func() { disconnect(t, pub) })

	h.arm(nil)
	// One at a time: Mosquitto forwards a QoS 2 message at PUBREL, so pipelined it could
	// overtake the QoS 1 message.
	for _, o := range []tern.PublishOptions{{Topic: "rcpt/q2", QoS: 2}, {Topic: "rcpt/q1", QoS: 1}} {
		if err := pub.Publish(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	m2 := receive(t, ctx, msgs, "QoS 2 message")
	m1 := receive(t, ctx, msgs, "QoS 1 message behind it")
	if m2.QoS != 2 || m1.QoS != 1 {
		t.Fatalf("got QoS %d then %d, want 2 then 1", m2.QoS, m1.QoS)
	}
	m1.Ack()
	m2.Ack() // the application is done with both; only the receipt holds the acks now
	if n := sub.Stats().AcksSent; n != 0 {
		t.Fatalf("%d acknowledgements sent before the receipt was durable", n)
	}
	h.open()
	pollUntil(t, "PUBREC and PUBACK after the sync", func() bool { return sub.Stats().AcksSent == 2 })
}

// A receipt whose fsync fails never lets PUBREC go: the connection closes (as after a failed
// Put) and the broker's resend, which tries the receipt again, is not delivered a second
// time. Promise: "a failed sync must not lead to PUBREC".
func TestAsyncReceiptSyncFailureSendsNoPubrec(t *testing.T) {
	broker := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := openHeldSyncs(t)
	downs := make(chan error, 16)
	sub := mustConnect(t, tern.WithBroker(broker.URL), tern.WithStore(h.store), tern.WithStats(),
		tern.WithClientID("rcpt-fail"), tern.WithCleanStart(false), tern.WithSessionExpiry(time.Hour),
		tern.WithReconnectBackoff(tern.ConstantBackoff(20*time.Millisecond)),
		tern.WithOnConnectionDown(func(err error) bool {
			select {
			case downs <- err:
			default:
			}
			return true
		}))
	t.Cleanup(func() { disconnect(t, sub) })
	msgs, _, err := sub.Subscribe(ctx, []tern.TopicFilter{{Topic: "rcpt/#", QoS: 2}})
	if err != nil {
		t.Fatal(err)
	}
	pub := mustConnect(t, tern.WithBroker(broker.URL))
	t.Cleanup(func() { disconnect(t, pub) })

	errDisk := errors.New("disk on fire")
	h.arm(errDisk)
	if _, err := pub.PublishAsync(ctx, tern.PublishOptions{Topic: "rcpt/x", QoS: 2}); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ctx, msgs, "QoS 2 message")
	m.Ack()
	h.open() // the sync fails now
	for i := range 2 {
		// The first close is the failed receipt; the second, after the reconnection, the
		// resend's new attempt failing on the failed log.
		select {
		case err := <-downs:
			if !errors.Is(err, errDisk) && !strings.Contains(err.Error(), "store receipt") {
				t.Fatalf("connection down %d: %v, want the store failure", i, err)
			}
		case <-ctx.Done():
			t.Fatalf("connection %d not closed after the failed receipt", i)
		}
	}
	if n := sub.Stats().AcksSent; n != 0 {
		t.Fatalf("%d acknowledgements sent for a receipt that never became durable", n)
	}
	select {
	case m := <-msgs:
		t.Fatalf("resend delivered again: %q dup=%v", m.Topic, m.Dup)
	default:
	}
}
