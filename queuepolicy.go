package tern

import (
	"errors"
	"fmt"
	"time"

	"github.com/ternmq/tern/packet"
)

// The QueuePublisher's give-up policy: what a refusal does to a queued message.
//
//	outcome                                   what happens
//	delivered                                 acknowledged in the queue
//	expired (TTL, Message Expiry, in-flight)  dead-letter callback if any, then acknowledged
//	transient refusal (0x80, 0x97, ...)       kept; the drain holds (backoff), then resends
//	refusal configuration can fix (0x87, ...) kept; the drain pauses (backoff or new
//	                                          connection), OnPause hook, then resends
//	WithQueueMaxAttempts refusals reached     set aside: callback, else DeadLetterQueue
//	invalid for every broker                  set aside at once
//	client closed / publisher closing         left in the queue for the next run
//
// "Set aside" never deletes unseen: with no callback and a queue that is no
// DeadLetterQueue, the message stays queued and the drain pauses as for a refusal.

// refusal classifies the error a queued message failed with.
type refusal uint8

const (
	refusalTransient refusal = iota // try again after a backoff
	refusalConfig                   // pause: only a new configuration or broker helps
	refusalExpired                  // its lifetime is over
	refusalInvalid                  // no broker can take it
	refusalResend                   // not refused (session lost): send again now
	refusalClosed                   // the client is gone: leave it queued
)

// classify is the one place that decides retry versus pause versus give-up.
func classify(err error) refusal {
	switch {
	case errors.Is(err, ErrClosed):
		return refusalClosed
	case errors.Is(err, ErrMessageExpired), errors.Is(err, ErrInflightTTL):
		// A limit the user set on the message or the client.
		return refusalExpired
	case errors.Is(err, ErrSessionLost):
		// FailPending: the broker forgot the session; the message was never refused.
		return refusalResend
	case errors.Is(err, ErrPacketTooLarge), errors.Is(err, ErrQoSNotSupported),
		errors.Is(err, ErrRetainNotSupported):
		// The client's own check against the CONNACK in force (or the same refusal from
		// the broker): another broker or configuration may accept it.
		return refusalConfig
	case errors.Is(err, ErrInvalidTopic), errors.Is(err, ErrInvalidMessage):
		// Breaks the protocol itself (stored by an older version, or enqueued directly).
		return refusalInvalid
	}
	var rc *ReasonCodeError
	if errors.As(err, &rc) {
		switch rc.Code {
		case packet.NotAuthorized, packet.TopicNameInvalid, packet.PayloadFormatInvalid,
			packet.PacketTooLarge, packet.QoSNotSupported, packet.RetainNotSupported:
			// The broker's configuration (ACL, limits) refuses it: pause until it changes.
			return refusalConfig
		}
	}
	// Quota exceeded, server busy, unspecified and every other code or failure: the same
	// message may pass later.
	return refusalTransient
}

// holdState is the drain's backoff after a refusal. Guarded by QueuePublisher.mu.
type holdState struct {
	until time.Time // nothing is sent before this
	gen   uint64    // the client's connection number when the hold began
	step  int       // holds in a row without a delivery
	round uint64    // incremented when a hold begins
	pause bool      // the hold is a pause (a refusal configuration can fix)
}

func (p *QueuePublisher) round() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hold.round
}

// holding reports whether the drain must stop handing out entries: a hold is running, or
// refused entries wait to be sent first.
func (p *QueuePublisher) holding() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.retry) > 0 || time.Now().Before(p.hold.until)
}

// refused decides what happens to an entry that failed with err. round is the hold round
// in which it was sent: refusals of entries sent before the current hold began belong to
// that hold and do not start another, so a full window refused at once costs one backoff
// step, not one per message.
func (p *QueuePublisher) refused(e QueueEntry, err error, round uint64) {
	kind := classify(err)
	switch kind {
	case refusalClosed:
		return
	case refusalExpired:
		p.expire(e, err)
		return
	case refusalResend:
		p.requeue(e)
		return
	case refusalInvalid:
		if p.setAside(e, fmt.Errorf("%w: %w", ErrPoison, err)) {
			return
		}
		kind = refusalConfig // nowhere to put it: keep it and pause
	}
	p.mu.Lock()
	n := p.busy[e.Seq] + 1
	p.busy[e.Seq] = n
	p.mu.Unlock()
	if max := p.cfg.maxAttempts; max > 0 && n >= max {
		if p.setAside(e, fmt.Errorf("%w after %d attempts: %w", ErrPoison, n, err)) {
			p.setErr(err)
			return
		}
	}
	p.retries.Add(1)
	// The hold first: once the entry is on the retry list the drain may take it, and it
	// must find the hold already running.
	p.startHold(kind == refusalConfig, e, err, round)
	p.requeue(e)
}

// requeue puts a busy entry on the retry list and wakes the drain.
func (p *QueuePublisher) requeue(e QueueEntry) {
	p.mu.Lock()
	p.retry = append(p.retry, e)
	p.mu.Unlock()
	signal(p.wake)
}

// startHold holds the drain for the next backoff step, unless the entry was sent before
// the hold now running began.
func (p *QueuePublisher) startHold(pause bool, e QueueEntry, err error, round uint64) {
	gen := p.c.connGeneration()
	p.mu.Lock()
	// The error and the hold it starts are seen together (Stats): never LastError
	// without Paused for a refusal that pauses.
	p.lastErr = err
	if round != p.hold.round {
		p.mu.Unlock()
		return
	}
	h := &p.hold
	h.round++
	h.step++
	d := p.cfg.backoff.Delay(h.step)
	h.until, h.gen, h.pause = time.Now().Add(d), gen, pause
	step := h.step
	if pause {
		p.pauses.Add(1)
	}
	p.mu.Unlock()
	if pause {
		p.c.log.Warn("tern: queue publisher paused: the broker's configuration refuses a message",
			"seq", e.Seq, "topic", e.Message.Topic, "err", err, "retry_in", d, "step", step)
		if fn := p.cfg.onPause; fn != nil {
			fn(e, err)
		}
		return
	}
	p.c.log.Info("tern: queue publisher backing off after a refusal",
		"seq", e.Seq, "err", err, "retry_in", d, "step", step)
}

// waitHold blocks while a hold runs. A new connection ends it early: its CONNACK may have
// lifted the limit. False means the publisher is closing.
func (p *QueuePublisher) waitHold() bool {
	for {
		p.mu.Lock()
		until, gen := p.hold.until, p.hold.gen
		p.mu.Unlock()
		d := time.Until(until)
		if d <= 0 {
			return true
		}
		changed, newer := p.c.connChange(gen)
		if newer {
			p.mu.Lock()
			if p.hold.until.Equal(until) {
				p.hold.until = time.Time{}
			}
			p.mu.Unlock()
			return true
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-changed:
		case <-p.ctx.Done():
			t.Stop()
			return false
		}
		t.Stop()
	}
}

// release forgets a busy entry that left the queue; a delivery also resets the backoff.
func (p *QueuePublisher) release(seq uint64, delivered bool) {
	p.mu.Lock()
	delete(p.busy, seq)
	if delivered {
		p.hold.step = 0
	}
	p.mu.Unlock()
}

// expire removes an entry whose lifetime is over: to the dead-letter callback if any,
// otherwise only counted. The lifetime is the user's own limit.
func (p *QueuePublisher) expire(e QueueEntry, reason error) {
	if fn := p.cfg.deadLetter; fn != nil {
		fn(e, reason)
	}
	p.c.log.Debug("tern: queued message expired", "seq", e.Seq, "topic", e.Message.Topic, "err", reason)
	p.finish(e.Seq)
}

// setAside gives an entry up: the dead-letter callback, or else the queue's dead-letter
// store, receives it before it is acknowledged in the queue, so a crash in between leaves
// a duplicate, never a loss. False means there was nowhere to put it (or storing it
// failed): it stays queued.
func (p *QueuePublisher) setAside(e QueueEntry, reason error) bool {
	if fn := p.cfg.deadLetter; fn != nil {
		fn(e, reason)
	} else if dl, ok := p.q.(DeadLetterQueue); ok {
		if err := dl.DeadLetter(e, reason); err != nil {
			err = fmt.Errorf("tern: store dead letter %d: %w", e.Seq, err)
			p.setErr(err)
			p.c.log.Error("tern: queued message kept: its dead letter could not be stored", "seq", e.Seq, "err", err)
			return false
		}
	} else {
		p.setErr(fmt.Errorf("tern: message %d kept: no dead-letter callback or store: %w", e.Seq, reason))
		return false
	}
	p.c.log.Warn("tern: queued message set aside", "seq", e.Seq, "topic", e.Message.Topic, "reason", reason)
	p.finish(e.Seq)
	return true
}

// finish acknowledges an entry given up on.
func (p *QueuePublisher) finish(seq uint64) {
	p.deadLettered.Add(1)
	p.release(seq, false)
	if err := p.q.Ack(seq); err != nil {
		p.setErr(err)
	}
}

// dropOldest gives up the oldest stored message not handed to the client, to make room.
// Called under sizeMu.
func (p *QueuePublisher) dropOldest() error {
	// The drain may claim entries between the count and the read: when every entry read is
	// busy and there may be more, read again, further. Bounded: each round reads further
	// unless entries left meanwhile, which makes room by itself.
	for range 8 {
		p.mu.Lock()
		n := len(p.busy) + len(p.dropped) + 1
		p.mu.Unlock()
		old, err := p.q.Read(0, n, nil)
		if err != nil {
			return err
		}
		var victim *QueueEntry
		p.mu.Lock()
		for i := range old {
			_, busy := p.busy[old[i].Seq]
			_, gone := p.dropped[old[i].Seq]
			if !busy && !gone {
				victim = &old[i]
				p.dropped[victim.Seq] = false // the drain skips it from now on
				break
			}
		}
		p.mu.Unlock()
		if victim == nil {
			if len(old) < n {
				return ErrQueueFull // everything stored is in flight
			}
			continue
		}
		if !p.setAside(*victim, ErrDropped) {
			p.mu.Lock()
			delete(p.dropped, victim.Seq)
			p.mu.Unlock()
			return ErrQueueFull
		}
		p.mu.Lock()
		if _, ok := p.dropped[victim.Seq]; ok {
			p.dropped[victim.Seq] = true
		}
		p.mu.Unlock()
		return nil
	}
	return ErrQueueFull
}

// connGeneration returns the number of the live connection, or of the last one.
func (c *Client) connGeneration() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connGen
}

// connChange reports whether a connection newer than gen is up (or the client closed, so
// the caller finds out), and otherwise returns a channel that fires when that may have
// changed: when a connection comes up, or when the live one starts to close. Between a
// connection closing and its removal there is no event, so the channel is then a short
// timer: a bounded wait, never a spin.
func (c *Client) connChange(gen uint64) (<-chan struct{}, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cn := c.conn
	switch {
	case c.closed, cn != nil && cn.gen > gen:
		return nil, true
	case cn == nil:
		return c.up, false
	}
	select {
	case <-cn.closing:
		ch := make(chan struct{})
		time.AfterFunc(10*time.Millisecond, func() { close(ch) })
		return ch, false
	default:
		return cn.closing, false
	}
}
