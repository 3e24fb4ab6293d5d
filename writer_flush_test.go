package tern

import (
	"net"
	"testing"
)

// Flush reports a write that failed: "Flush waits for the write" must not say the bytes
// went out when the connection refused them.
func TestFlushReportsFailedWrite(t *testing.T) {
	a, b := net.Pipe()
	b.Close() // every write on a now fails
	w := newWriter(a, 64<<10)
	looped := make(chan struct{})
	go func() { defer close(looped); w.loop() }()
	defer func() {
		w.fail(ErrConnectionLost)
		<-looped
		a.Close()
	}()
	if err := w.sendRequest([]byte("subscribe")); err != nil {
		t.Fatal(err)
	}
	if err := w.flush(testCtx(t)); err == nil {
		t.Fatal("flush returned nil for bytes whose write failed")
	}
}
