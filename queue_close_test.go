package tern

import (
	"context"
	"testing"
)

// A queue closed with several messages still buffered hands every one of them out and then
// reports the end; draining it must not wake waiters through the closed ready channel
// (that was a "send on closed channel" panic when a subscription ended with a backlog).
func TestQueueDrainAfterClose(t *testing.T) {
	q := newQueue[int](8, Block, nil)
	for i := range 3 {
		if r := q.push(i, nil, nil); r != pushQueued {
			t.Fatalf("push %d: %v", i, r)
		}
	}
	q.close()
	for i := range 3 {
		v, ok := q.Pop(context.Background())
		if !ok || v != i {
			t.Fatalf("Pop %d = %d, %v", i, v, ok)
		}
	}
	if _, ok := q.Pop(context.Background()); ok {
		t.Fatal("Pop after the backlog: ok, want the end of the queue")
	}
}
