package tern

import "sync"

// eventLoop runs lifecycle callbacks one at a time, in the order they were posted, off the
// read loop and the supervisor, so a slow callback stalls neither. Its goroutine starts when
// a callback is posted and ends when the queue is empty: a client without callbacks, or one
// between events, runs none (the per-connection target of PRODUCT.md: at most 3 goroutines
// per idle client). Cost: one goroutine start per burst of events.
type eventLoop struct {
	mu      sync.Mutex
	queue   []func()
	running bool          // a goroutine is draining queue
	closed  bool          // no more posts accepted
	done    chan struct{} // closed once closed and the queue is drained
}

func newEventLoop() *eventLoop {
	return &eventLoop{done: make(chan struct{})}
}

// post queues fn, starting the loop's goroutine if none runs. Lifecycle events are few per
// connection, so the queue is not bounded. After close, fn is dropped.
func (e *eventLoop) post(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.queue = append(e.queue, fn)
	if !e.running {
		e.running = true
		go e.run()
	}
}

func (e *eventLoop) run() {
	for {
		e.mu.Lock()
		if len(e.queue) == 0 {
			e.running = false
			e.queue = nil // drop the backing array with the goroutine
			if e.closed {
				close(e.done)
			}
			e.mu.Unlock()
			return
		}
		fn := e.queue[0]
		e.queue[0] = nil
		e.queue = e.queue[1:]
		e.mu.Unlock()
		fn()
	}
}

// close lets queued callbacks run, then ends the loop. It does not wait; done does. Calling
// it again does nothing.
func (e *eventLoop) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	if !e.running {
		close(e.done)
	}
}
