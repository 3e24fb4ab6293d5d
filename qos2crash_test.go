package tern_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/internal/brokertest"
)

// A subscriber with a file store is killed (SIGKILL) after a QoS 2 message was delivered to
// it and before the application acknowledged it. The next process on the same store and
// session must get the message: the broker resends it (no PUBREC ever left), and a receipt
// stored for a message the application never acknowledged must not turn that resend into
// a silent duplicate. Promise: an acknowledged message is never lost across processes
// (the receipt records what the application took, MQTT 5 §4.3.3 method B).

const (
	q2crashRoleEnv   = "TERN_Q2CRASH_ROLE" // "first" or "second"
	q2crashBrokerEnv = "TERN_Q2CRASH_BROKER"
	q2crashDirEnv    = "TERN_Q2CRASH_DIR"
	q2crashIDEnv     = "TERN_Q2CRASH_ID"
	q2crashModeEnv   = "TERN_Q2CRASH_MODE" // "sync": Store only; "async": AsyncStore
)

// syncOnly hides filestore's PutAsync, so the client takes the synchronous receipt path.
type syncOnly struct{ tern.Store }

// watchedStore is filestore with a way to wait for the inbound receipts handed to PutAsync.
type watchedStore struct {
	*filestore.Store
	wg sync.WaitGroup
}

func (w *watchedStore) PutAsync(r tern.StoreRecord, done func(error)) {
	if r.Kind != tern.RecordInbound {
		w.Store.PutAsync(r, done)
		return
	}
	w.wg.Add(1)
	w.Store.PutAsync(r, func(err error) { done(err); w.wg.Done() })
}

// TestQoS2CrashChild is the body of the child processes; it does nothing in a normal run.
func TestQoS2CrashChild(t *testing.T) {
	role := os.Getenv(q2crashRoleEnv)
	if role == "" {
		t.Skip("runs only as a child of TestQoS2UnackedSurvivesKill9")
	}
	fst, err := filestore.Open(os.Getenv(q2crashDirEnv))
	if err != nil {
		t.Fatal(err)
	}
	ws := &watchedStore{Store: fst}
	var st tern.Store = ws
	if os.Getenv(q2crashModeEnv) == "sync" {
		st = syncOnly{fst}
	}
	id := os.Getenv(q2crashIDEnv)
	c, err := tern.New(tern.WithBroker(os.Getenv(q2crashBrokerEnv)), tern.WithClientID(id),
		tern.WithCleanStart(false), tern.WithSessionExpiry(time.Hour), tern.WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msgs, sub, err := c.Subscribe(ctx, []tern.TopicFilter{{Topic: "q2crash/" + id, QoS: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sub.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Println("Q2CRASH READY")
	for {
		var m *tern.Message
		select {
		case m = <-msgs:
		case <-ctx.Done():
			t.Fatal("no message")
		}
		if role == "first" {
			// Whatever the client stored for it is durable now; the application has not
			// acknowledged it, and never will: the parent kills this process.
			ws.wg.Wait()
			fmt.Println("Q2CRASH GOT " + string(m.Payload))
			io.Copy(io.Discard, os.Stdin)
			return
		}
		fmt.Println("Q2CRASH GOT " + string(m.Payload))
		m.Ack()
		if string(m.Payload) == "end" {
			break
		}
	}
	zero := time.Duration(0)
	c.DisconnectWith(ctx, tern.DisconnectOptions{SessionExpiry: &zero})
	fst.Close()
}

func TestQoS2UnackedSurvivesKill9(t *testing.T) {
	if os.Getenv(q2crashRoleEnv) != "" {
		t.Skip("parent only")
	}
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) { testQoS2UnackedSurvivesKill9(t, mode) })
	}
}

func testQoS2UnackedSurvivesKill9(t *testing.T, mode string) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	dir := t.TempDir()
	id := fmt.Sprintf("q2crash-%s-%d", mode, time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := mustConnect(t, tern.WithBroker(b.URL))
	defer disconnect(t, pub)
	publish := func(payload string) {
		t.Helper()
		err := pub.Publish(ctx, tern.PublishOptions{Topic: "q2crash/" + id, QoS: 2, Payload: []byte(payload)})
		if err != nil {
			t.Fatal(err)
		}
	}
	start := func(role string) *crashChild {
		t.Helper()
		return startCrashChild(t, ctx, "TestQoS2CrashChild", "Q2CRASH", q2crashRoleEnv+"="+role, q2crashBrokerEnv+"="+b.URL,
			q2crashDirEnv+"="+dir, q2crashIDEnv+"="+id, q2crashModeEnv+"="+mode)
	}

	first := start("first")
	if got := first.next(); got != "READY" {
		t.Fatalf("first child: %q", got)
	}
	publish("unacked")
	if got := first.next(); got != "GOT unacked" {
		t.Fatalf("first child: %q", got)
	}
	first.cmd.Process.Kill() // SIGKILL: the application never acknowledged the message
	first.cmd.Wait()

	second := start("second")
	if got := second.next(); got != "READY" {
		t.Fatalf("second child: %q", got)
	}
	publish("end")
	var got []string
	for {
		line := second.next()
		got = append(got, line)
		if line == "GOT end" {
			break
		}
	}
	if err := second.cmd.Wait(); err != nil {
		t.Errorf("second child: %v\n%s", err, second.stderr)
	}
	if len(got) != 2 || got[0] != "GOT unacked" {
		t.Fatalf("second process received %q; want the unacknowledged message again, then end", got)
	}
}
