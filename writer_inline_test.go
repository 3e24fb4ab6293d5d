package tern

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeTry is a tryWriter for the writer's inline path that writes through conn: take says
// how many bytes of each attempt the "socket" takes (all when nil), and an attempt waits
// for gate (when set) after signalling entered (if the test is waiting for that), so a test
// can act while an inline write is in progress.
type fakeTry struct {
	conn    net.Conn
	take    func(n int) int
	entered chan struct{}
	gate    chan struct{}
}

func (f *fakeTry) tryWrite(b []byte) (int, error) {
	if f.entered != nil {
		select {
		case f.entered <- struct{}{}:
		default: // a later attempt: nobody waits for it
		}
	}
	if f.gate != nil {
		<-f.gate
	}
	n := len(b)
	if f.take != nil {
		n = f.take(n)
	}
	if n == 0 {
		return 0, nil
	}
	return f.conn.Write(b[:n])
}

// pipeWriter returns a writer on one end of a pipe whose other end is read into the
// returned function's result (call it once the writer has stopped), its loop running.
func pipeWriter(t *testing.T) (*writer, net.Conn, func() []byte) {
	t.Helper()
	a, b := net.Pipe()
	var got bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		io.Copy(&got, b)
	}()
	w := newWriter(a, 64<<10)
	looped := make(chan struct{})
	go func() { defer close(looped); w.loop() }()
	t.Cleanup(func() {
		w.fail(ErrConnectionLost)
		<-looped
		a.Close()
		b.Close()
		<-read
	})
	return w, a, func() []byte {
		a.Close()
		<-read
		return got.Bytes()
	}
}

// appendBytes appends p like sendUrgent in a corked batch would, without waking the loop.
func appendBytes(w *writer, p []byte) uint64 {
	w.lock()
	gen := w.gen
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	return gen
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not within 10s", what)
	}
}

// TestWriterFailDuringInlineWrite: fail while the read loop's inline write is in progress.
// The loop waits for that write to end (nothing may write after stopped, where sendDisconnect
// writes DISCONNECT), and it must then stop: a connection that cannot stop blocks the
// supervisor forever ("writer.fail/close must still stop everything").
func TestWriterFailDuringInlineWrite(t *testing.T) {
	w, a, _ := pipeWriter(t)
	ft := &fakeTry{conn: a, entered: make(chan struct{}), gate: make(chan struct{})}
	w.raw = ft
	w.cork()
	appendBytes(w, []byte("publish"))
	released := make(chan struct{})
	go func() { defer close(released); w.uncork(true) }()
	<-ft.entered // the inline write is in progress
	w.fail(ErrConnectionLost)
	select {
	case <-w.stopped:
		t.Fatal("the loop stopped while an inline write was in progress")
	default:
	}
	close(ft.gate)
	waitClosed(t, released, "uncork")
	waitClosed(t, w.stopped, "the loop's stop after the inline write ended")
}

// TestWriterInlineHandoverExact: an inline write the socket takes only in part hands the
// rest to the loop, which writes it before anything appended later; a flush waiter for that
// generation returns only once the rest is written, and the byte stream is exact.
func TestWriterInlineHandoverExact(t *testing.T) {
	w, a, result := pipeWriter(t)
	ft := &fakeTry{conn: a, take: func(n int) int { return min(n, 3) }}
	w.raw = ft
	w.cork()
	gen := appendBytes(w, []byte("first-batch"))
	w.uncork(true) // the socket takes "fir": "st-batch" goes to the loop
	if got := w.handovers.Load(); got != 1 {
		t.Fatalf("handovers %d, want 1", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.waitFlushed(ctx, gen); err != nil {
		t.Fatal(err)
	}
	w.cork()
	appendBytes(w, []byte("|second"))
	w.uncork(true)
	if err := w.flush(ctx); err != nil {
		t.Fatal(err)
	}
	w.fail(ErrConnectionLost)
	waitClosed(t, w.stopped, "loop stop")
	if got := string(result()); got != "first-batch|second" {
		t.Fatalf("stream %q, want %q", got, "first-batch|second")
	}
}

// TestWriterInlineWhileLoopWrites: an uncork that finds a write in progress leaves its bytes
// to that writer (no second writer at once, no lost bytes, order kept).
func TestWriterInlineWhileLoopWrites(t *testing.T) {
	w, a, result := pipeWriter(t)
	ft := &fakeTry{conn: a, entered: make(chan struct{}), gate: make(chan struct{})}
	w.raw = ft
	w.cork()
	appendBytes(w, []byte("A"))
	done := make(chan struct{})
	go func() { defer close(done); w.uncork(true) }()
	<-ft.entered
	// A second batch while A's write is in progress: it must not write.
	w.cork()
	appendBytes(w, []byte("B"))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.uncork(true) }()
	wg.Wait() // returned without writing: the write in progress owns the socket
	close(ft.gate)
	waitClosed(t, done, "first uncork")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.flush(ctx); err != nil {
		t.Fatal(err)
	}
	w.fail(ErrConnectionLost)
	waitClosed(t, w.stopped, "loop stop")
	if got := string(result()); got != "AB" {
		t.Fatalf("stream %q, want AB", got)
	}
	if errors.Is(w.failure(), ErrConnectionLost) {
		t.Fatal("fail is not a write failure")
	}
}
