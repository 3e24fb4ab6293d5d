package tern_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/internal/brokertest"
)

// A publisher with a filestore is killed (SIGKILL) between the broker's PUBREC for its QoS 2
// message and the PUBREL: either before the RecordReleased reached the disk ("unwritten") or
// after it is durable but before the client heard so ("durable"). A second process on the
// same store and session finishes the exchange: the message reaches the subscriber exactly
// once. Promise: a QoS 2 exchange in progress completes exactly once after kill -9 (PUBREL
// never leaves before its RecordReleased is durable, so the broker still holds the exchange
// whichever record the next process finds).

const (
	relCrashRoleEnv   = "TERN_RELCRASH_ROLE" // "first" or "second"
	relCrashModeEnv   = "TERN_RELCRASH_MODE" // "unwritten" or "durable"
	relCrashBrokerEnv = "TERN_RELCRASH_BROKER"
	relCrashDirEnv    = "TERN_RELCRASH_DIR"
	relCrashIDEnv     = "TERN_RELCRASH_ID"
)

// stopAtRelease is a filestore that never reports a RecordReleased durable to the client, so
// no PUBREL leaves. With write set it stores the record and says so on stdout once it is
// durable; without, it drops the record and says so at once.
type stopAtRelease struct {
	*filestore.Store
	write bool
}

func (s *stopAtRelease) PutAsync(r tern.StoreRecord, done func(error)) {
	if r.Kind != tern.RecordReleased {
		s.Store.PutAsync(r, done)
		return
	}
	if !s.write {
		fmt.Println("RELCRASH HELD")
		return
	}
	s.Store.PutAsync(r, func(err error) {
		if err == nil {
			fmt.Println("RELCRASH HELD")
		}
	})
}

// TestQoS2PublishCrashChild is the body of the child processes; it does nothing in a normal
// run.
func TestQoS2PublishCrashChild(t *testing.T) {
	role := os.Getenv(relCrashRoleEnv)
	if role == "" {
		t.Skip("runs only as a child of TestQoS2PublishFileStoreKill9")
	}
	fst, err := filestore.Open(os.Getenv(relCrashDirEnv))
	if err != nil {
		t.Fatal(err)
	}
	var st tern.Store = fst
	if role == "first" {
		st = &stopAtRelease{Store: fst, write: os.Getenv(relCrashModeEnv) == "durable"}
	}
	c, err := tern.New(tern.WithBroker(os.Getenv(relCrashBrokerEnv)), tern.WithClientID(os.Getenv(relCrashIDEnv)),
		tern.WithCleanStart(false), tern.WithSessionExpiry(time.Hour), tern.WithStore(st), tern.WithStats())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if role == "first" {
		if _, err := c.PublishAsync(ctx, tern.PublishOptions{Topic: "relcrash/" + os.Getenv(relCrashIDEnv), QoS: 2, Payload: []byte("once")}); err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, os.Stdin) // until the parent kills this process
		return
	}
	// The restored message completes on the resumed session; its token belongs to nobody,
	// the counter says when.
	for c.Stats().PublishAcked == 0 {
		if ctx.Err() != nil {
			t.Fatal("the restored message never completed")
		}
		time.Sleep(5 * time.Millisecond) // a child polling its own counter, with a deadline
	}
	if recs, err := fst.Load(); err != nil || len(recs) != 0 {
		t.Fatalf("store after completion: %d records, %v", len(recs), err)
	}
	zero := time.Duration(0)
	c.DisconnectWith(ctx, tern.DisconnectOptions{SessionExpiry: &zero})
	fst.Close()
	fmt.Println("RELCRASH DONE")
}

func TestQoS2PublishFileStoreKill9(t *testing.T) {
	if os.Getenv(relCrashRoleEnv) != "" {
		t.Skip("parent only")
	}
	for _, mode := range []string{"unwritten", "durable"} {
		t.Run(mode, func(t *testing.T) { testQoS2PublishFileStoreKill9(t, mode) })
	}
}

func testQoS2PublishFileStoreKill9(t *testing.T, mode string) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	dir := t.TempDir()
	id := fmt.Sprintf("relcrash-%s-%d", mode, time.Now().UnixNano())
	topic := "relcrash/" + id
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := make(chan string, 16)
	sub := mustConnect(t, tern.WithBroker(b.URL))
	defer disconnect(t, sub)
	if _, err := sub.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: topic, QoS: 2}}, func(m *tern.Message) {
		got <- string(m.Payload)
	}); err != nil {
		t.Fatal(err)
	}

	start := func(role string) *crashChild {
		t.Helper()
		return startCrashChild(t, ctx, "TestQoS2PublishCrashChild", "RELCRASH", relCrashRoleEnv+"="+role, relCrashModeEnv+"="+mode,
			relCrashBrokerEnv+"="+b.URL, relCrashDirEnv+"="+dir, relCrashIDEnv+"="+id)
	}

	first := start("first")
	if line := first.next(); line != "HELD" {
		t.Fatalf("first child: %q", line)
	}
	first.cmd.Process.Kill() // SIGKILL between PUBREC and PUBREL
	first.cmd.Wait()

	second := start("second")
	if line := second.next(); line != "DONE" {
		t.Fatalf("second child: %q", line)
	}
	if err := second.cmd.Wait(); err != nil {
		t.Fatalf("second child: %v\n%s", err, second.stderr)
	}
	// The exchange is complete at the broker, which forwarded the message before its PUBCOMP;
	// an end marker sent after it arrives after it.
	end := mustConnect(t, tern.WithBroker(b.URL))
	defer disconnect(t, end)
	if err := end.Publish(ctx, tern.PublishOptions{Topic: topic, QoS: 2, Payload: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for {
		select {
		case m := <-got:
			msgs = append(msgs, m)
		case <-ctx.Done():
			t.Fatalf("end marker not received; got %q", msgs)
		}
		if msgs[len(msgs)-1] == "end" {
			break
		}
	}
	if len(msgs) != 2 || msgs[0] != "once" {
		t.Fatalf("subscriber received %q; want the message once, then the end marker", msgs)
	}
}
