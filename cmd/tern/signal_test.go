package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// child is the tern command running as a child process, its output captured live.
type child struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	exited         chan struct{}
}

// startChild starts "tern args..." as a child process; stdin, when not nil, is its input.
// Cleanup kills it if it is still running.
func startChild(t *testing.T, stdin *os.File, args ...string) *child {
	t.Helper()
	c := &child{cmd: ternChild(args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	if stdin != nil {
		c.cmd.Stdin = stdin
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() { c.cmd.Process.Kill(); <-c.exited })
	return c
}

// status waits for the child to exit and returns its exit status.
func (c *child) status(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(limit):
		t.Fatalf("%v did not exit within %v; stderr:\n%s", c.cmd.Args, limit, c.stderr.String())
	}
	var ee *exec.ExitError
	if err := c.cmd.Err; err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return c.cmd.ProcessState.ExitCode()
}

// Ctrl-C (SIGINT) ends tern sub cleanly: exit status 0. Promise of issue 10: "Ctrl-C exits
// cleanly (0 for sub)".
func TestSubInterruptExitsZero(t *testing.T) {
	url := startMosquitto(t)
	c := startChild(t, nil, "sub", "-d", "-L", url, "-t", "sig/#")
	c.stderr.waitFor(t, "subscribed to", 10*time.Second)
	c.cmd.Process.Signal(os.Interrupt)
	if st := c.status(t, 10*time.Second); st != 0 {
		t.Fatalf("status %d; want 0; stderr %q", st, c.stderr.String())
	}
}

// Ctrl-C while pub --queue waits for more input prints the report, says "interrupted",
// counts what was stored, and exits 130; the stored messages are delivered. Promise: a
// report for pub --queue, nothing accepted is lost.
func TestPubQueueInterruptReports(t *testing.T) {
	url := startMosquitto(t)
	rx := startReceiver(t, url, "sig/q")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := startChild(t, r, "pub", "--queue", t.TempDir(), "-L", url, "-t", "sig/q", "-l", "--print-stored")
	r.Close()
	w.WriteString("one\ntwo\n") // and the input stays open, as from a terminal
	c.stdout.waitFor(t, "stored 2\n", 10*time.Second)
	if missing, _ := rx.waitAll(map[string]bool{"one": true, "two": true}, 10*time.Second); len(missing) > 0 {
		t.Fatalf("missing %q", missing)
	}
	c.cmd.Process.Signal(os.Interrupt)
	if st := c.status(t, 10*time.Second); st != 130 {
		t.Fatalf("status %d; want 130; stderr %q", st, c.stderr.String())
	}
	if e := c.stderr.String(); !strings.Contains(e, "interrupted: accepted 2, delivered 2, waiting 0") ||
		!strings.Contains(e, "tern pub: interrupted\n") {
		t.Fatalf("stderr %q; want the report of an interrupted run", e)
	}
}

// Ctrl-C while tern pub -l waits for more input ends it at once, with one line saying so
// and exit status 130: the input was not all published.
func TestPubInterruptWhileReading(t *testing.T) {
	url := startMosquitto(t)
	rx := startReceiver(t, url, "sig/p")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := startChild(t, r, "pub", "-L", url, "-t", "sig/p", "-q", "1", "-l")
	r.Close()
	w.WriteString("first\n")
	if missing, _ := rx.waitAll(map[string]bool{"first": true}, 10*time.Second); len(missing) > 0 {
		t.Fatalf("missing %q", missing)
	}
	c.cmd.Process.Signal(os.Interrupt)
	if st := c.status(t, 10*time.Second); st != exitInterrupted || c.stderr.String() != "tern pub: interrupted after 1 messages\n" {
		t.Fatalf("status %d, stderr %q; want 130 and one line", st, c.stderr.String())
	}
}
