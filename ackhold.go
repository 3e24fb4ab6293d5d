package tern

import (
	"sync/atomic"
	"time"
)

// Acknowledgement holds: how a consumer goroutine sends the acknowledgements of a run of
// messages in one write instead of waking the writer goroutine for each.
//
// A callback goroutine (SubscribeCallback without SubInline) takes the messages a read batch
// queued one by one. Each Ack appends a PUBACK or PUBREC to the writer; without a hold the
// first one wakes the writer goroutine on another thread, and more wake it again while it
// writes. With a hold, the acknowledgements of the messages the goroutine takes without
// waiting are only appended, and when it runs out of messages (before it parks) it writes
// them itself with one non-blocking system call (writer.kickLocked inline), as the read loop
// does at the end of its batch.
//
// A hold never keeps an acknowledgement back for long: it ends when the goroutine has no
// message left, and at the latest ackHoldMax after it began (a timer), so a callback that
// blocks, say waiting for a message the broker sends only once it has our acknowledgements,
// delays them by ackHoldMax once and does not deadlock. Any other write (a publish, the read
// loop's batch end, a flush) takes held bytes with it. Only acknowledgements are held
// (writer.sendAck); PINGREQ and AUTH never are.

// ackHoldMax bounds how long a hold keeps acknowledgements from the writer.
const ackHoldMax = 500 * time.Microsecond

// ackHold is one consumer goroutine's hold. begin and end are called by that goroutine; the
// timer may end the hold concurrently, so the state is atomic.
type ackHold struct {
	c       *Client
	max     time.Duration // ackHoldMax, or Client.ackHoldMax when a test set it
	holding atomic.Bool
	timer   *time.Timer
	// endGap, tests only: runs in end between the hold's end and what follows it.
	endGap func()
}

func newAckHold(c *Client) *ackHold {
	h := &ackHold{c: c, max: ackHoldMax}
	if c.ackHoldMax > 0 {
		h.max = c.ackHoldMax
	}
	h.timer = time.AfterFunc(time.Hour, h.expire)
	h.timer.Stop()
	return h
}

// begin starts a hold unless one is on. Cost while holding: one atomic load. A nil hold
// does nothing (begin and end).
func (h *ackHold) begin() {
	if h == nil || h.holding.Load() || !h.holding.CompareAndSwap(false, true) {
		return
	}
	h.c.ackHolds.Add(1)
	h.timer.Reset(h.max)
}

// end ends the hold and writes what is pending on the calling goroutine when the writer is
// idle (one non-blocking system call; the writer goroutine takes what the socket does not).
// The caller must hold no lock.
//
// end leaves the timer alone: a channel's hold is shared by every goroutine reading it, and
// another may begin a new hold (and re-arm the timer) right after this one ended; stopping
// the timer then would cancel the new hold's bound, and nothing but its consumer would ever
// end it. A timer left armed fires once, at most ackHoldMax later, and finds no hold or ends
// one early, which only writes sooner.
func (h *ackHold) end() {
	if h == nil || !h.holding.CompareAndSwap(true, false) {
		return
	}
	if h.endGap != nil {
		h.endGap()
	}
	h.c.ackHolds.Add(-1)
	h.c.kickWriter(true)
}

// expire ends a hold that lasted ackHoldMax. A late firing from an earlier hold may end the
// current one early, which only writes sooner.
func (h *ackHold) expire() {
	if h.holding.CompareAndSwap(true, false) {
		h.c.ackHolds.Add(-1)
		h.c.kickWriter(true)
	}
}

// kickWriter sees that the current connection's pending bytes get written: inline from the
// caller when allowed and the writer is idle, otherwise by the writer goroutine.
func (c *Client) kickWriter(inline bool) {
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	if cn == nil {
		return
	}
	cn.w.mu.Lock()
	cn.w.kickLocked(inline)
}
