package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern"
)

// childEnv marks a re-execution of the test binary as the tern command itself.
const childEnv = "TERN_CLI_CHILD"

// ternChild returns the tern command as a child process (the test binary, re-executed).
func ternChild(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return cmd
}

// receiver subscribes to topic at QoS 1 and counts every payload it gets.
type receiver struct {
	mu   sync.Mutex
	got  map[string]int
	more chan struct{}
}

func startReceiver(t *testing.T, url, topic string) *receiver {
	t.Helper()
	r := &receiver{got: map[string]int{}, more: make(chan struct{}, 1)}
	c, err := tern.New(tern.WithBroker(url), tern.WithClientID("spool-rx"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { disconnect(c) })
	_, err = c.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: topic, QoS: 1}}, func(m *tern.Message) {
		r.mu.Lock()
		r.got[string(m.Payload)]++
		r.mu.Unlock()
		select {
		case r.more <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitAll waits until every payload in want has arrived, up to limit, and returns the
// missing ones and the duplicates.
func (r *receiver) waitAll(want map[string]bool, limit time.Duration) (missing []string, dups int) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		missing, dups = missing[:0], 0
		for p := range want {
			if r.got[p] == 0 {
				missing = append(missing, p)
			}
		}
		for _, n := range r.got {
			dups += n - 1
		}
		r.mu.Unlock()
		if len(missing) == 0 {
			return nil, dups
		}
		select {
		case <-r.more:
		case <-deadline.C:
			return missing, dups
		}
	}
}

// A broker outage while spooling: everything is stored and waits; the next run, with the
// broker up, delivers it. Promise: nothing accepted by pub --queue is lost.
func TestPubQueueBrokerOutage(t *testing.T) {
	dir := t.TempDir()
	down := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	st, _, stderr := runTern(t, "a\nb\nc\n", "pub", "--queue", dir, "-L", down, "-t", "spool/o", "-l", "--drain-timeout", "300ms")
	if st != 0 || !strings.Contains(stderr, "accepted 3, delivered 0, waiting 3") {
		t.Fatalf("broker down: status %d, stderr %q", st, stderr)
	}
	url := startMosquitto(t)
	rx := startReceiver(t, url, "spool/o")
	st, _, stderr = runTern(t, "", "pub", "--queue", dir, "-L", url, "-t", "spool/o")
	if st != 0 || !strings.Contains(stderr, "accepted 0, delivered 3, waiting 0") || !strings.Contains(stderr, "(3 were waiting at the start)") {
		t.Fatalf("broker up: status %d, stderr %q", st, stderr)
	}
	if missing, dups := rx.waitAll(map[string]bool{"a": true, "b": true, "c": true}, 10*time.Second); len(missing) > 0 || dups != 0 {
		t.Fatalf("missing %q, duplicates %d", missing, dups)
	}
}

// kill -9 of pub --queue, several times, mid-input and mid-drain, then a run that drains:
// every message reported stored arrives (duplicates counted, none lost). Promise: kill -9
// at any moment loses nothing that was reported accepted.
func TestPubQueueKill9(t *testing.T) {
	url := startMosquitto(t)
	rx := startReceiver(t, url, "spool/k")
	dir := t.TempDir()
	accepted := map[string]bool{}
	const lines = 400
	for round, killAt := range []int{50, 150, lines, lines, 250} {
		spoolAndKill(t, []string{"pub", "--queue", dir, "-L", url, "-t", "spool/k", "-l", "--print-stored",
			"--drain-timeout", "30s"}, round, lines, killAt, accepted)
	}
	drainAndCheck(t, rx, accepted, "pub", "--queue", dir, "-L", url, "-t", "spool/k", "--drain-timeout", "60s")
}

// drainAndCheck runs `tern pub args` (a --queue run without input) until the spool is empty
// and checks that rx received every line in accepted.
func drainAndCheck(t *testing.T, rx *receiver, accepted map[string]bool, args ...string) {
	t.Helper()
	outb, err := ternChild(args...).CombinedOutput()
	if err != nil || !strings.Contains(string(outb), ", waiting 0 in") {
		t.Fatalf("final drain: %v: %s", err, outb)
	}
	t.Logf("final run: %s", strings.TrimSpace(string(outb)))
	missing, dups := rx.waitAll(accepted, 30*time.Second)
	t.Logf("%d accepted, %d duplicates", len(accepted), dups)
	if len(missing) > 0 {
		t.Fatalf("%d accepted messages lost, e.g. %q", len(missing), missing[:min(5, len(missing))])
	}
}

// spoolAndKill runs `tern pub` with args (a --queue spool reading lines, --print-stored),
// feeds it lines r<round>-1 .. r<round>-<lines>, SIGKILLs it once killAt lines are reported
// stored, and records every line reported stored in accepted.
func spoolAndKill(t *testing.T, args []string, round, lines, killAt int, accepted map[string]bool) {
	t.Helper()
	cmd := ternChild(args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		w := bufio.NewWriter(in)
		for i := 1; i <= lines; i++ {
			fmt.Fprintf(w, "r%d-%d\n", round, i)
		}
		w.Flush()
		in.Close()
	}()
	sc := bufio.NewScanner(out)
	stored := 0
	for stored < killAt && sc.Scan() {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), "stored %d", &n); err != nil {
			t.Fatalf("round %d: unexpected output %q", round, sc.Text())
		}
		accepted[fmt.Sprintf("r%d-%d", round, n)] = true
		stored = n
	}
	cmd.Process.Signal(syscall.SIGKILL)
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	if stored < killAt {
		t.Fatalf("round %d: only %d stored before the output ended (%v): %s", round, stored, err, stderr.String())
	}
	t.Logf("round %d: killed after %d stored", round, stored)
}
