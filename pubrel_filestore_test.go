package tern_test

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
)

// A publisher with a filestore keeps its whole window of QoS 2 messages busy (PublishAsync)
// while its connection is cut three times and then the broker is restarted: the
// RecordReleased records commit asynchronously, so cuts land while PUBRECs wait for their
// records, for their PUBRELs, or for PUBCOMP. Every message completes with success, the
// subscriber gets each one exactly once, and the store is empty at the end.
// Promise: a QoS 2 publish is delivered exactly once across connection cuts and broker
// restarts, with the filestore's asynchronous RecordReleased.
func TestQoS2PublishFileStoreCutsAndRestart(t *testing.T) {
	// max_inflight_messages 1000: Mosquitto 2.0.11 restores at restart the state of at most
	// that many in-flight messages per client and may resend the rest to the subscriber as
	// new (see TestFaultBrokerRestart); a broker duplicate is not what this test looks for.
	b := brokertest.StartMosquitto(t, brokertest.Config{Persistence: true, MaxInflight: 1000})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", b.Log())
		}
	})
	px := faultproxy.New(t, b.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	session := func(id string) []tern.Option {
		// Clean Start 0 from the first connect: Mosquitto 2.0.11 drops at restart a session
		// created clean (BROKERS.md).
		return []tern.Option{tern.WithClientID(id), tern.WithCleanStart(false), tern.WithSessionExpiry(time.Hour),
			tern.WithReconnectBackoff(tern.ConstantBackoff(10 * time.Millisecond)), tern.WithStats()}
	}

	const n = 3000
	seen := newSeqCounter(n)
	subUp, subUps := upEvents()
	sub := mustConnect(t, append(session("rel-fs-sub"), tern.WithBroker(b.URL), subUp)...)
	t.Cleanup(func() { disconnect(t, sub) })
	waitUp(t, subUps, "subscriber")
	if _, err := sub.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: "relfs/#", QoS: 2}}, seen.add); err != nil {
		t.Fatal(err)
	}

	st, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pubUp, pubUps := upEvents()
	cst := &countReleases{Store: st}
	pub := mustConnect(t, append(session("rel-fs-pub"), tern.WithBroker(px.URL()), tern.WithStore(cst), pubUp)...)
	waitUp(t, pubUps, "publisher")

	// One goroutine fills the window; another waits for the tokens in order and asks for a
	// fault at fixed counts of completions, which the test goroutine makes.
	toks := make(chan *tern.PublishToken, n)
	pubErr := make(chan error, 1)
	go func() {
		defer close(toks)
		for i := range n {
			m := tern.PublishOptions{Topic: "relfs/x", QoS: 2, Payload: binary.BigEndian.AppendUint64(nil, uint64(i))}
			tok, err := pub.PublishAsync(ctx, m)
			if err != nil {
				pubErr <- err
				return
			}
			toks <- tok
		}
	}()
	faults := map[int]string{n / 6: "cut", 2 * n / 6: "cut", 3 * n / 6: "cut", 4 * n / 6: "restart"}
	faultReq := make(chan string, len(faults))
	waited := make(chan error, 1)
	go func() {
		done := 0
		for tok := range toks {
			if err := tok.Wait(ctx); err != nil {
				waited <- err
				return
			}
			done++
			if f, ok := faults[done]; ok {
				faultReq <- f
			}
		}
		waited <- nil
	}()
	for range len(faults) {
		var f string
		select {
		case f = <-faultReq:
		case err := <-pubErr:
			t.Fatalf("publish: %v", err)
		case err := <-waited:
			t.Fatalf("publishing ended before every fault was made: %v", err)
		case <-ctx.Done():
			t.Fatal("no fault requested in time")
		}
		t.Logf("%s with %d RecordReleased records committing", f, cst.pending.Load())
		switch f {
		case "cut":
			px.Cut()
			if !waitUp(t, pubUps, "publisher after a cut").SessionPresent {
				t.Fatal("publisher lost its session at a cut")
			}
		case "restart":
			b.Restart(t)
			for what, ch := range map[string]<-chan *tern.ConnackInfo{"subscriber": subUps, "publisher": pubUps} {
				if !waitUp(t, ch, what+" after the restart").SessionPresent {
					t.Fatalf("%s lost its session at the broker restart", what)
				}
			}
		}
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("a QoS 2 publish failed: %v", err)
		}
	case err := <-pubErr:
		t.Fatalf("publish: %v", err)
	}
	select {
	case <-seen.all:
	case <-ctx.Done():
		missing, _ := seen.missing(n)
		t.Fatalf("%d of %d messages never arrived (first %v)", len(missing), n, missing[:min(10, len(missing))])
	}
	// Every message completed, so a duplicate would have been delivered by now... unless it is
	// still on its way: one more message, published after all the others, closes the stream.
	if err := pub.Publish(ctx, tern.PublishOptions{Topic: "relfs/x", QoS: 2, Payload: binary.BigEndian.AppendUint64(nil, n)}); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "the closing message", func() bool {
		seen.mu.Lock()
		defer seen.mu.Unlock()
		return seen.got[n] > 0
	})
	missing, dups := seen.missing(n)
	ps := pub.Stats()
	t.Logf("%d QoS 2 messages; publisher: %d connections lost, %d resent with DUP", n, ps.ConnectionLost, ps.PublishResent)
	if len(missing) != 0 || dups != 0 {
		t.Fatalf("%d missing, %d delivered twice; want exactly once", len(missing), dups)
	}
	if ps.ConnectionLost < uint64(len(faults)) {
		t.Errorf("publisher lost its connection %d times, want at least %d: the faults did not happen", ps.ConnectionLost, len(faults))
	}
	if recs, err := st.Load(); err != nil || len(recs) != 0 {
		t.Errorf("store holds %d records after every exchange completed (%v)", len(recs), err)
	}
	disconnect(t, pub)
}

// countReleases is a filestore that counts the RecordReleased records handed to PutAsync and
// not yet reported durable, to show where the faults land.
type countReleases struct {
	*filestore.Store
	pending atomic.Int64
}

func (c *countReleases) PutAsync(r tern.StoreRecord, done func(error)) {
	if r.Kind != tern.RecordReleased {
		c.Store.PutAsync(r, done)
		return
	}
	c.pending.Add(1)
	c.Store.PutAsync(r, func(err error) { c.pending.Add(-1); done(err) })
}
