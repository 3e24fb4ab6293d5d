package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/filequeue"
)

// A broker that refuses a queued message (Mosquitto's max_packet_size, announced in its
// CONNACK) pauses pub --queue: the message and those behind it wait in DIR, the pause is
// reported, the run exits 1. With --max-attempts the refused message is set aside in
// DIR/dead, readable with filequeue, and the rest are delivered. Promise: a durable queue
// never deletes unseen; every give-up is visible.
func TestPubQueueRefusalPausesThenSetsAside(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("x", 300)
	down := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// Stored while the broker is down, as by an earlier run: the limit is not known yet.
	st, _, stderr := runTern(t, "small1\n"+big+"\nsmall2\n", "pub", "--queue", dir, "-L", down, "-t", "spool/p",
		"-l", "--drain-timeout", "0s")
	if st != 0 || !strings.Contains(stderr, "accepted 3, delivered 0, waiting 3") {
		t.Fatalf("storing: status %d, stderr %q", st, stderr)
	}
	url := startMosquitto(t, "max_packet_size 200")
	rx := startReceiver(t, url, "spool/p")

	st, _, stderr = runTern(t, "", "pub", "--queue", dir, "-L", url, "-t", "spool/p", "--drain-timeout", "1s")
	t.Logf("paused run: %s", stderr)
	if st != 1 || !strings.Contains(stderr, "paused: the broker refuses queued message") ||
		!strings.Contains(stderr, "300 bytes") || !strings.Contains(stderr, "delivered 1, waiting 2") ||
		!strings.Contains(stderr, "the broker refused queued messages") || !strings.Contains(stderr, "they wait in "+dir) {
		t.Fatalf("paused run: status %d; want 1, the pause reported, 2 waiting", st)
	}

	st, _, stderr = runTern(t, "", "pub", "--queue", dir, "-L", url, "-t", "spool/p", "--max-attempts", "2", "--drain-timeout", "20s")
	t.Logf("give-up run: %s", stderr)
	if st != 1 || !strings.Contains(stderr, "set aside message") || !strings.Contains(stderr, "delivered 1, waiting 0") ||
		!strings.Contains(stderr, "1 queued messages set aside in "+dir+"/dead after 2 refusals each") {
		t.Fatalf("give-up run: status %d; want 1, the dead letter named, nothing waiting", st)
	}
	if missing, dups := rx.waitAll(map[string]bool{"small1": true, "small2": true}, 10*time.Second); len(missing) > 0 || dups != 0 {
		t.Fatalf("missing %q, duplicates %d", missing, dups)
	}

	// The dead letter is on disk, with the reason; a later run says it is still there.
	st, _, stderr = runTern(t, "", "pub", "--queue", dir, "-L", url, "-t", "spool/p", "--drain-timeout", "1s")
	if st != 0 || !strings.Contains(stderr, "1 messages set aside by earlier runs wait in "+dir+"/dead") {
		t.Fatalf("later run: status %d, stderr %q", st, stderr)
	}
	q, err := filequeue.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	dls, err := q.DeadLetters()
	if err != nil || len(dls) != 1 || string(dls[0].Entry.Message.Payload) != big || dls[0].Reason == "" {
		t.Fatalf("dead letters %+v, %v; want the 300-byte message with its reason", dls, err)
	}
}
