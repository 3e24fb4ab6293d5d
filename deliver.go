package tern

import (
	"time"

	"github.com/ternmq/tern/packet"
)

// Delivery: how the read loop hands a message to a subscription without letting a slow
// consumer stop it.
//
// A Block subscription whose buffer is full does not stop the read loop for a QoS 1/2
// message: the message is held in the subscription's hold list, and a pump goroutine moves
// held messages into the buffer as the consumer makes room. Held messages are not
// acknowledged, so the broker can have at most the Receive Maximum this client advertised
// of them outstanding: the hold is bounded by the inbound window, and the read loop keeps
// reading PUBACK, PUBCOMP, SUBACK and PINGRESP for the client's own requests. A broker that
// overruns the window meets a hard cap (holdCap, per subscription); past it, and for QoS 0,
// which the window does not bound, the read loop waits for the consumer as before (counted
// in Stats().ReadStalls).

// holdCap bounds a subscription's hold list: twice the Receive Maximum the client advertised.
// A broker keeping the window never fills it; Mosquitto 2.0 was seen overrunning the window
// while acknowledgements flow (by up to half of it), and the slack keeps the read loop going
// through that, while memory stays a small multiple of the window.
func holdCap(receiveMax uint16) int { return 2 * int(receiveMax) }

// heldMsg is a message waiting in a subscription's hold list, with the connection that
// carried it (an abandoned connection's messages are given back, not acknowledged).
type heldMsg struct {
	m  *Message
	cn *conn
}

// deliver hands m to the subscription under its policy. It runs on the read loop.
func (s *Subscription) deliver(m *Message, cn *conn) {
	if st := s.c.st; st != nil {
		st.Delivered.Add(1)
	}
	if s.inline != nil {
		s.deliverInline(m)
		return
	}
	waits := false // counted as a stall already
	if s.cfg.policy == Block {
		if m.QoS > 0 && s.hold(m, cn) {
			return
		}
		// At the hold cap, or QoS 0 behind held messages: s.mu is the pump's until the
		// hold list has drained.
		if waits = m.QoS > 0 || s.isPumping(); waits {
			s.stalled(cn)
		}
	}
	if s.cfg.autoAck {
		defer m.Ack() // after the hand-over, so acknowledgement follows arrival
	}
	s.mu.Lock() // while a pump runs, this waits until the hold list has drained
	defer s.mu.Unlock()
	if s.closed {
		m.Ack()
		return
	}
	if s.q != nil {
		// After a successful push the consumer may already have acknowledged (and, with
		// zero-copy, recycled) m: it must not be touched again.
		if s.offerQueue(m, cn) {
			return
		}
		if s.cfg.policy == Block && !waits {
			s.stalled(cn)
		}
		if s.q.push(m, s.quit, cn.closing) == pushStopped {
			s.notDelivered(m, cn)
		}
		return
	}
	s.ackIfRoom(m)
	select {
	case s.ch <- m:
		return
	default:
	}
	switch s.cfg.policy {
	case DropNewest:
		s.dropped(m)
	case DropOldest:
		for {
			select {
			case old := <-s.ch:
				s.dropped(old)
			default:
			}
			select {
			case s.ch <- m:
				return
			default:
			}
		}
	default:
		if !waits {
			s.stalled(cn)
		}
		select {
		case s.ch <- m:
		case <-s.quit:
			m.Ack()
		case <-cn.closing:
			s.notDelivered(m, cn)
		}
	}
}

func (s *Subscription) isPumping() bool {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return s.pumping
}

// stalled counts a delivery that stops the read loop until the consumer makes room, and
// ends the read batch first: the consumers it would wake and the acknowledgements it corks
// must not wait for the stall.
func (s *Subscription) stalled(cn *conn) {
	cn.endBatch(false) // under s.mu: the loop writes
	if st := s.c.st; st != nil {
		st.ReadStalls.Add(1)
	}
}

// deliverInline calls an inline callback (SubInline) on the read loop. s.mu is held
// around the call, so close, which takes it, returns only once no callback runs.
func (s *Subscription) deliverInline(m *Message) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		m.Ack()
		return
	}
	s.inline(m)
	s.mu.Unlock()
	if !s.cfg.manualAck {
		m.Ack() // idempotent: a callback may have acknowledged already
	}
}

// offerQueue adds m to the queue form's buffer if it has room, waking the consumer at the
// end of the read batch rather than now (see conn.endBatch). Caller holds s.mu.
func (s *Subscription) offerQueue(m *Message, cn *conn) bool {
	ok, first := s.q.offerQuiet(m)
	if first {
		cn.wakeLater = append(cn.wakeLater, s.q)
	}
	return ok
}

// hold takes a QoS 1/2 message for a Block subscription: it is handed over at once if the
// buffer has room, otherwise held for the pump. It reports false when the caller must
// deliver it the blocking way: the hold list is at its cap (the broker overran the window).
func (s *Subscription) hold(m *Message, cn *conn) bool {
	s.heldMu.Lock()
	if s.pumping {
		if len(s.held) >= holdCap(s.c.cfg.receiveMax) {
			s.heldMu.Unlock()
			return false
		}
		s.held = append(s.held, heldMsg{m, cn})
		s.heldMu.Unlock()
		return true
	}
	s.heldMu.Unlock()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		m.Ack()
		return true
	}
	if s.offer(m, cn) {
		s.mu.Unlock()
		if s.cfg.autoAck {
			m.Ack()
		}
		return true
	}
	s.heldMu.Lock()
	s.held = append(s.held, heldMsg{m, cn})
	s.pumping = true
	s.heldMu.Unlock()
	// The pump inherits s.mu, so nothing overtakes the held messages (a QoS 0 delivery
	// waits for the lock) and close waits for the pump to finish.
	go s.pump()
	return true
}

// offer hands m over if the buffer has room, without waiting. Caller holds s.mu.
func (s *Subscription) offer(m *Message, cn *conn) bool {
	if s.q != nil {
		return s.offerQueue(m, cn)
	}
	s.ackIfRoom(m)
	select {
	case s.ch <- m:
		return true
	default:
		return false
	}
}

// ackIfRoom acknowledges an auto-acknowledged message before it enters a channel that is
// certain to take it: only the read loop and the pump send on s.ch, both under s.mu, and the
// application only receives, so room seen here stays. Acknowledged after the send instead,
// the consumer could take the message and Disconnect before the acknowledgement is queued,
// and the session would send it again. Caller holds s.mu.
func (s *Subscription) ackIfRoom(m *Message) {
	if s.cfg.autoAck && len(s.ch) < cap(s.ch) {
		m.Ack()
	}
}

// pump moves held messages into the buffer in order, waiting for the consumer, until the
// hold list is empty. It runs with s.mu held (locked by hold, unlocked here). A message
// whose connection has closed is given back unacknowledged; once the subscription ends
// the rest are acknowledged and discarded, as a delivery to a closed subscription is.
func (s *Subscription) pump() {
	defer s.mu.Unlock()
	for {
		s.heldMu.Lock()
		if len(s.held) == 0 {
			s.held = s.held[:0:0] // let a large backlog's array go
			s.pumping = false
			s.heldMu.Unlock()
			return
		}
		h := s.held[0]
		s.held[0] = heldMsg{}
		s.held = s.held[1:]
		s.heldMu.Unlock()
		if s.handOver(h.m, h.cn) && s.cfg.autoAck {
			h.m.Ack()
		}
	}
}

// handOver waits until m is in the buffer, the subscription ends or m's connection closes,
// and reports whether m was handed over. Caller holds s.mu.
func (s *Subscription) handOver(m *Message, cn *conn) bool {
	if s.q != nil {
		if s.q.push(m, s.quit, cn.closing) == pushStopped {
			s.notDelivered(m, cn)
			return false
		}
		return true
	}
	select {
	case s.ch <- m:
		return true
	case <-s.quit:
		m.Ack()
	case <-cn.closing:
		s.notDelivered(m, cn)
	}
	return false
}

// notDelivered gives up a message that could not be handed over before its connection
// closed. Nothing is acknowledged, and a QoS 2 message is forgotten unless some other
// subscription got it, so the broker's resend is delivered instead of being taken for a
// duplicate.
func (s *Subscription) notDelivered(m *Message, cn *conn) {
	select {
	case <-cn.closing:
		m.abandon()
	default:
		m.Ack() // the subscription ended: discarded on purpose
	}
}

// dropped acknowledges a message the policy discarded, after the on-drop hook has seen it.
func (s *Subscription) dropped(m *Message) {
	if st := s.c.st; st != nil {
		st.Dropped.Add(1)
	}
	if s.cfg.onDrop != nil {
		s.cfg.onDrop(m)
	}
	m.Ack()
}

// droppedByQueue is the queue form's drop hook.
func (s *Subscription) droppedByQueue(m *Message) { s.dropped(m) }

// unroutedWarnEvery spaces the warnings about unrouted messages after the first one of a
// connection.
const unroutedWarnEvery = 10 * time.Second

// deliverUnrouted handles a message that matched no subscription: the catch-all handler
// gets it when there is one; otherwise it is acknowledged (in arrival order, as in is
// released), dropped, counted and, for QoS 1/2, logged. Runs on the read loop.
func (c *Client) deliverUnrouted(cn *conn, p *packet.Publish, in *inbound) {
	if s := c.catchAllSub(); s != nil {
		var shared *packet.Publish
		s.deliver(c.newMessage(s, p, in, &shared), cn)
		return
	}
	if st := c.st; st != nil {
		st.Unrouted.Add(1)
	}
	if p.QoS > 0 {
		c.unroutedMissed++
		now := time.Now()
		if cn.gen != c.unroutedGen || now.Sub(c.unroutedAt) >= unroutedWarnEvery {
			c.log.Warn("tern: message matched no subscription; acknowledged and dropped (see WithUnroutedHandler)",
				"topic", p.Topic, "qos", p.QoS, "dropped_since_last_warning", c.unroutedMissed)
			c.unroutedGen, c.unroutedAt, c.unroutedMissed = cn.gen, now, 0
		}
	}
	if in != nil {
		in.release()
	}
}

// catchAllSub returns the subscription behind WithUnroutedHandler, made on first use, or nil
// without a handler or once the client is closed.
func (c *Client) catchAllSub() *Subscription {
	fn := c.cfg.onUnrouted
	if fn == nil {
		return nil
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.catchAll == nil && !c.catchAllClosed {
		s := &Subscription{c: c, cfg: subConfig{buffer: c.cfg.subBuffer, policy: Block},
			quit: make(chan struct{}), ready: make(chan struct{})}
		s.settleOnce.Do(func() { close(s.ready) }) // no SUBSCRIBE to wait for
		s.q = newQueue(s.cfg.buffer, Block, s.droppedByQueue)
		s.startCallback(fn)
		c.catchAll = s
	}
	return c.catchAll
}
