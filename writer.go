package tern

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// writer owns the write side of one connection. Producers append encoded packets to a shared
// buffer under w.mu; one goroutine swaps the buffer out and writes it with a single syscall,
// so a burst of packets from many goroutines costs one write. Nothing is allocated per packet.
type writer struct {
	conn      net.Conn
	max       int // bytes that may wait before producers block
	urgentMax int // bytes sendUrgent may add between two writes before the connection fails

	mu      sync.Mutex
	buf     []byte        // pending bytes, appended by producers
	spare   []byte        // the buffer being written, or free for the next swap
	err     error         // sticky: the first write error, or errWriterClosed
	werr    error         // the write error that stopped the loop, if that is what did
	gen     uint64        // generation of the bytes in buf: bumped on every swap
	done    uint64        // every generation below this one has been written
	flushed chan struct{} // closed when the generation in flight has been written; nil until a waiter needs it
	space   chan struct{} // closed when buf shrinks below max after being full
	urgent  int           // bytes sendUrgent appended to buf since the last swap
	corked  bool          // the read loop is inside a batch: sendUrgent leaves the loop asleep

	// One write at a time: its holder (the loop, or the read loop writing inline) swapped buf
	// into spare and owns spare until it finishes. An inline write the socket takes only in
	// part leaves its tail in rest (generation restGen) for the loop, which keeps writing set.
	writing bool
	rest    []byte
	restGen uint64
	raw     tryWriter // non-blocking writes on the socket; nil: the loop writes everything

	idleTimer *time.Timer // armed while the loop is idle holding buffers; see releaseIdle
	idleGen   uint64      // w.gen when the idle timer was last armed

	wake    chan struct{} // cap 1: there is something to write
	stopped chan struct{} // closed when the loop has exited
	writes  atomic.Uint64 // completed writes, read by the keepalive timer
	// begun counts writes about to be made, bumped before the system call: the read pacer
	// compares it across a pause of the peer (did the peer wait for something we sent?).
	begun atomic.Uint64
	// urgentWakes counts sendUrgent calls that woke the loop (not corked): at most one per
	// read batch when acknowledgements coalesce, which a test checks.
	urgentWakes atomic.Uint64
	// inlineWrites counts writes the read loop made itself (writeInline);
	// handovers counts inline writes the socket took only in part (the loop wrote the rest).
	// loopWrites counts the loop's writes.
	inlineWrites, handovers, loopWrites atomic.Uint64
}

// tryWriter writes what a socket takes now without waiting (see rawWriter): n < len(b) with
// a nil error means the socket buffer is full.
type tryWriter interface {
	tryWrite(b []byte) (n int, err error)
}

// minUrgentBound is the least urgentMax: above what a correct broker can make the client
// owe at once (an acknowledgement for each of its window's messages and for each of the
// 65,535 packet identifiers, a few bytes each).
const minUrgentBound = 1 << 20

// writeBufSize is the size of the pooled write buffers. A connection takes one when bytes
// are queued and gives both back once the writer has had nothing to write for idleRelease, so
// an idle connection holds none after idleRelease (the per-connection target: at most 32 KiB
// of heap) and a busy one keeps the same two buffers for as long as it stays busy.
const writeBufSize = 64 << 10

// writeBufs holds free write buffers as array pointers, so Get and Put allocate nothing.
var writeBufs = sync.Pool{New: func() any { return new([writeBufSize]byte) }}

// putWriteBuf returns b to the pool if it is one of the pool's buffers (it may have been
// replaced by a larger one by append).
func putWriteBuf(b []byte) {
	if cap(b) == writeBufSize {
		writeBufs.Put((*[writeBufSize]byte)(b[:writeBufSize]))
	}
}

// lock takes w.mu and makes sure there is a buffer to append to.
func (w *writer) lock() {
	w.mu.Lock()
	if w.buf == nil {
		w.buf = writeBufs.Get().(*[writeBufSize]byte)[:0]
	}
}

func newWriter(conn net.Conn, max int) *writer {
	return &writer{
		conn:      conn,
		max:       max,
		urgentMax: urgentBound(max),
		raw:       newTryWriter(conn),
		wake:      make(chan struct{}, 1),
		stopped:   make(chan struct{}),
	}
}

// reserve locks the writer for appending and returns the generation the appended bytes will
// belong to. It waits, bounded by ctx, while the buffer is over its limit. On success the
// caller holds w.mu and must call commit.
func (w *writer) reserve(ctx context.Context) (uint64, error) {
	w.lock()
	for {
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return 0, err
		}
		if len(w.buf) < w.max {
			return w.gen, nil
		}
		if w.space == nil {
			w.space = make(chan struct{})
		}
		space := w.space
		w.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		w.lock()
	}
}

// tryReserve is reserve without waiting: with the buffer over its limit it returns
// ErrWriteQueueFull (WriteFailFast).
func (w *writer) tryReserve() (uint64, error) {
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return 0, err
	}
	if len(w.buf) >= w.max {
		w.mu.Unlock()
		return 0, ErrWriteQueueFull
	}
	return w.gen, nil
}

// commit releases w.mu after an append and wakes the loop.
func (w *writer) commit() {
	w.mu.Unlock()
	w.wakeLoop()
}

// urgentBound is the bound on urgent bytes for a write buffer of limit bytes: the larger of
// limit and minUrgentBound.
func urgentBound(limit int) int { return max(limit, minUrgentBound) }

// sendUrgent appends b without waiting for space: for small control packets (acks, PINGREQ)
// that must never wait behind publishes and are sent under the session lock. They are
// bounded all the same: when more than urgentMax bytes of them pile up between two writes,
// the peer is not reading what it makes us owe (a hostile or dead broker), and rather than
// grow memory without bound the connection fails with ErrWriteQueueFull. Cost: one append.
func (w *writer) sendUrgent(b []byte) error {
	w.lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	if w.urgent+len(b) > w.urgentMax {
		err := fmt.Errorf("%w: %d bytes of acknowledgements wait and the peer reads nothing",
			ErrWriteQueueFull, w.urgent)
		w.failLocked(err, true)
		w.mu.Unlock()
		// A write stuck on the peer returns at once and the loop stops (and closes the
		// connection). A deadline, not Close: closing TLS may block, and c.mu is held.
		w.conn.SetWriteDeadline(time.Unix(1, 0))
		w.wakeLoop()
		return err
	}
	w.urgent += len(b)
	w.buf = append(w.buf, b...)
	if w.corked {
		w.mu.Unlock() // uncork writes them or wakes the loop at the end of the read batch
		return nil
	}
	w.urgentWakes.Add(1)
	w.commit()
	return nil
}

// cork makes sendUrgent append without waking the write loop, so the acknowledgements a
// read batch causes (PUBACK, PUBREC, PUBREL, PUBCOMP, from any goroutine) leave in one
// write when the batch ends. Only the read loop corks, and only while the next packet is
// already in memory: it uncorks before anything that can wait (a read from the network, a
// full subscription buffer), so corked bytes never wait on the peer or on a consumer.
// Publishes and requests still wake the loop, which then writes the corked bytes too.
func (w *writer) cork() {
	w.mu.Lock()
	w.corked = true
	w.mu.Unlock()
}

// uncork ends a cork. With inline set (the read loop holding no lock) it writes what is
// pending itself when no write is in progress and the socket takes it without waiting
// (writeInline); otherwise it wakes the loop if anything is pending.
func (w *writer) uncork(inline bool) {
	w.mu.Lock()
	w.corked = false
	w.kickLocked(inline)
}

// kickLocked sees that pending bytes get written: inline (if allowed and possible), by the
// write in progress (which looks again when it ends), or by the loop. Called with w.mu held;
// releases it.
func (w *writer) kickLocked(inline bool) {
	switch {
	case len(w.buf) == 0 || w.err != nil || w.writing:
		w.mu.Unlock()
	case !inline || w.raw == nil:
		w.mu.Unlock()
		w.wakeLoop()
	default:
		w.writeInline() // releases w.mu
	}
}

// inlineRounds bounds the writes one inline writer makes for bytes others appended while
// it wrote (a publisher or a consumer's Ack, say); past it the loop takes over.
const inlineRounds = 4

// writeInline writes the pending bytes on the calling goroutine with non-blocking system
// calls. It never waits for the peer: what the socket does not take now (the peer is slow
// or has stopped reading) goes to the loop as rest, with its generation, and the loop writes
// it the ordinary blocking way. Bytes appended meanwhile are written in another round, or
// after inlineRounds left to the loop.
// Caller holds w.mu with buf non-empty, no write in progress and no error; writeInline
// releases w.mu.
func (w *writer) writeInline() {
	for round := 1; ; round++ {
		out, gen := w.swapLocked()
		w.mu.Unlock()
		w.begun.Add(1)
		n, err := w.raw.tryWrite(out)
		if n > 0 {
			w.writes.Add(1)
		}
		w.inlineWrites.Add(1)
		w.mu.Lock()
		if err == nil && n < len(out) {
			// Hand the tail to the loop; writing stays set, so nobody else writes first.
			w.rest, w.restGen = out[n:], gen
			w.mu.Unlock()
			w.handovers.Add(1)
			w.wakeLoop()
			return
		}
		w.finishLocked(gen, err)
		pending := len(w.buf) > 0
		if pending && w.err == nil && round < inlineRounds {
			continue
		}
		// The loop may be waiting for this write to end: to stop (fail came meanwhile),
		// or to write what came meanwhile.
		wake := w.err != nil || pending
		if !wake {
			w.armIdleLocked()
		}
		w.mu.Unlock()
		if wake {
			w.wakeLoop()
		}
		return
	}
}

// swapLocked takes the pending bytes for a write: buf becomes spare and the generation
// advances. Caller holds w.mu and becomes the writer until finishLocked.
func (w *writer) swapLocked() ([]byte, uint64) {
	w.buf, w.spare = w.spare[:0], w.buf
	w.urgent = 0
	gen := w.gen
	w.gen++
	if w.space != nil {
		close(w.space)
		w.space = nil
	}
	w.writing = true
	return w.spare, gen
}

// finishLocked ends the write of generation gen with its outcome. Caller holds w.mu.
func (w *writer) finishLocked(gen uint64, err error) {
	w.writing = false
	if err != nil && w.err == nil {
		w.err, w.werr = err, err
	}
	if err == nil {
		// A failed write is not done: its waiters get the error (waitFlushed).
		w.done = gen + 1
	}
	w.wakeFlushWaitersLocked()
	// Large one-off buffers are not kept: the steady state stays small.
	if cap(w.spare) > 4*w.max {
		w.spare = nil
	}
	w.spare = w.spare[:0]
}

// sendRequest appends a SUBSCRIBE or UNSUBSCRIBE without waiting (it is sent under the
// session lock). Unlike sendUrgent it is not held to urgentMax: requests come from the
// application, each bounded by a packet identifier and its caller's ctx.
func (w *writer) sendRequest(b []byte) error {
	w.lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.buf = append(w.buf, b...)
	w.commit()
	return nil
}

// flush waits until every byte appended so far has been written, or ctx ends.
func (w *writer) flush(ctx context.Context) error {
	w.mu.Lock()
	gen := w.gen
	if len(w.buf) == 0 {
		if w.done >= gen {
			w.mu.Unlock()
			return nil
		}
		gen-- // only the write in progress
	}
	w.mu.Unlock()
	return w.waitFlushed(ctx, gen)
}

// waitFlushed blocks until every byte of generation gen has been handed to the kernel.
func (w *writer) waitFlushed(ctx context.Context, gen uint64) error {
	for {
		w.mu.Lock()
		if w.done > gen {
			w.mu.Unlock()
			return nil
		}
		if w.err != nil && w.done <= gen {
			err := w.err
			w.mu.Unlock()
			return err
		}
		if w.flushed == nil {
			w.flushed = make(chan struct{}) // made on demand: a write nobody waits for allocates nothing
		}
		ch := w.flushed
		// Bytes a cork keeps from the loop would otherwise wait for the batch's end, which
		// may be the caller's own (an inline callback that acks, then flushes).
		pending := len(w.buf) > 0
		w.mu.Unlock()
		if pending {
			w.wakeLoop()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// loop writes pending bytes until the connection fails or close is called. It never
// overlaps an inline write (writeInline): it waits for one in progress to end, and stops
// only once none is in progress, so after stopped is closed nothing writes to the socket.
func (w *writer) loop() {
	defer close(w.stopped)
	defer func() {
		w.mu.Lock()
		if w.idleTimer != nil {
			w.idleTimer.Stop()
			w.idleTimer = nil
		}
		w.mu.Unlock()
	}()
	for range w.wake {
		if !w.drain() {
			return
		}
	}
}

// drain writes until nothing is pending. It reports false when the loop must stop.
func (w *writer) drain() bool {
	for {
		w.mu.Lock()
		var out []byte
		var gen uint64
		switch {
		case w.rest != nil && w.werr == nil:
			// The tail of an inline write: written even after fail, so that a DISCONNECT
			// written after stopped never lands inside a packet.
			out, gen = w.rest, w.restGen
			w.rest = nil
		case w.rest != nil:
			// The socket failed (werr is set): the tail is dropped, its waiters get werr.
			w.rest = nil
			w.writing = false
			w.mu.Unlock()
			w.conn.Close()
			return false
		case w.writing:
			// An inline write is in progress: it hands over or wakes the loop when it ends.
			w.mu.Unlock()
			return true
		case w.err != nil:
			werr := w.werr
			w.mu.Unlock()
			if werr != nil {
				w.conn.Close()
			}
			return false
		case len(w.buf) == 0:
			w.armIdleLocked()
			w.mu.Unlock()
			return true
		default:
			out, gen = w.swapLocked()
		}
		w.mu.Unlock()

		w.begun.Add(1)
		_, err := w.conn.Write(out)
		w.writes.Add(1)
		w.loopWrites.Add(1)

		w.mu.Lock()
		w.finishLocked(gen, err)
		w.mu.Unlock()
		if err != nil {
			w.conn.Close()
			return false
		}
	}
}

// idleRelease is how long a writer stays idle before it gives its buffers back.
const idleRelease = time.Second

// armIdleLocked arms the idle timer when the loop goes idle holding buffers. One timer per
// idle period: a busy writer re-arms it at most once per idleRelease (releaseIdle).
func (w *writer) armIdleLocked() {
	if w.buf == nil && w.spare == nil {
		return
	}
	w.idleGen = w.gen
	if w.idleTimer == nil {
		w.idleTimer = time.AfterFunc(idleRelease, w.releaseIdle)
	}
}

// releaseIdle gives both buffers back to the pool if nothing was queued or written for
// idleRelease; otherwise it looks again later. Never while a write is in progress: the loop
// writes from w.spare outside the lock (w.done < w.gen then).
func (w *writer) releaseIdle() {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.err != nil:
		w.idleTimer = nil
	case w.gen != w.idleGen || w.done != w.gen || len(w.buf) != 0:
		w.idleGen = w.gen
		w.idleTimer.Reset(idleRelease)
	default:
		putWriteBuf(w.buf)
		putWriteBuf(w.spare)
		w.buf, w.spare = nil, nil
		w.idleTimer = nil
	}
}

// failure returns the write error that stopped the loop, or nil if it stopped because of fail.
func (w *writer) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.werr
}

// fail makes every later send return err and stops the loop once pending bytes are dropped.
func (w *writer) fail(err error) {
	w.mu.Lock()
	w.failLocked(err, false)
	w.mu.Unlock()
	w.wakeLoop()
}

// failLocked records err as the writer's sticky error (the first one wins) and wakes every
// waiter. With asWrite, err is also reported by failure, so the connection closes for it.
func (w *writer) failLocked(err error, asWrite bool) {
	if w.err == nil {
		w.err = err
		if asWrite {
			w.werr = err
		}
	}
	if w.space != nil {
		close(w.space)
		w.space = nil
	}
	w.wakeFlushWaitersLocked()
}

// wakeFlushWaitersLocked wakes every waitFlushed; they re-check under w.mu. Caller holds w.mu.
func (w *writer) wakeFlushWaitersLocked() {
	if w.flushed != nil {
		close(w.flushed)
		w.flushed = nil
	}
}

func (w *writer) wakeLoop() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}
