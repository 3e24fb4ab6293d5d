package tern

import "sync"

// eventLoop runs lifecycle callbacks one at a time, in the order they were posted, on a
// goroutine of its own so a slow callback never stalls the read loop or the supervisor.
type eventLoop struct {
	mu     sync.Mutex
	queue  []func()
	closed bool
	wake   chan struct{} // cap 1
	done   chan struct{} // closed when the loop has exited
}

func newEventLoop() *eventLoop {
	e := &eventLoop{wake: make(chan struct{}, 1), done: make(chan struct{})}
	go e.run()
	return e
}

// post queues fn. Lifecycle events are few per connection, so the queue is not bounded.
func (e *eventLoop) post(fn func()) {
	e.mu.Lock()
	if !e.closed {
		e.queue = append(e.queue, fn)
	}
	e.mu.Unlock()
	signal(e.wake)
}

func (e *eventLoop) run() {
	defer close(e.done)
	for {
		e.mu.Lock()
		if len(e.queue) == 0 {
			closed := e.closed
			e.mu.Unlock()
			if closed {
				return
			}
			<-e.wake
			continue
		}
		fn := e.queue[0]
		e.queue[0] = nil
		e.queue = e.queue[1:]
		e.mu.Unlock()
		fn()
	}
}

// close lets queued callbacks run, then ends the loop. It does not wait; done does.
func (e *eventLoop) close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	signal(e.wake)
}
