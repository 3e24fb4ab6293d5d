package tern

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"time"

	"github.com/ternmq/tern/packet"
)

// Backoff gives the delay before reconnection attempt number attempt (1 for the first retry).
// Implementations must be safe for use by one goroutine at a time.
type Backoff interface {
	Delay(attempt int) time.Duration
}

// ExponentialBackoff doubles the delay from Min up to Max. Jitter in [0, 1] spreads each
// delay randomly by up to that fraction, so many clients cut off at once do not return at
// once.
type ExponentialBackoff struct {
	Min, Max time.Duration
	Jitter   float64
}

// Delay implements Backoff.
func (b ExponentialBackoff) Delay(attempt int) time.Duration {
	d := b.Min
	if d <= 0 {
		d = 100 * time.Millisecond
	}
	for i := 1; i < attempt && (b.Max <= 0 || d < b.Max); i++ {
		d *= 2
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	if j := b.Jitter; j > 0 {
		if j > 1 {
			j = 1
		}
		d = time.Duration(float64(d) * (1 - j + 2*j*rand.Float64()))
	}
	return d
}

// ConstantBackoff waits the same time before every attempt.
type ConstantBackoff time.Duration

// Delay implements Backoff.
func (b ConstantBackoff) Delay(int) time.Duration { return time.Duration(b) }

// SessionLossPolicy decides what happens to unacknowledged outbound messages when the broker
// reports, on reconnect, that it no longer has the session. A QoS 2 message that got PUBREC
// but not yet PUBCOMP counts as unacknowledged here: a broker may hold an incoming QoS 2
// message until PUBREL and lose it with the session (Mosquitto does). One restored from a
// store after PUBREC, whose bytes are no longer kept, cannot be sent again under either
// policy: it fails with ErrSessionLost (counted in Stats.PublishFailed) and is logged.
type SessionLossPolicy uint8

const (
	// Republish sends them again as new messages (DUP clear). They may be delivered twice if
	// the broker had forwarded them before it lost the session. The default.
	Republish SessionLossPolicy = iota
	// FailPending completes them with ErrSessionLost and leaves the decision to the caller.
	FailPending
)

// supervise watches the live connection and replaces it when it dies, until the client is
// disconnected or the connection-down callback says stop. cn is nil when the first connection
// is still to be made (WithBackgroundConnect).
func (c *Client) supervise(ctx context.Context, cn *conn) {
	defer func() {
		c.bg.Wait()
		c.events.close()
		close(c.supDone)
	}()
	attempt := 0
	for {
		if cn != nil {
			if !c.watch(ctx, cn) {
				return
			}
		}
		// A connection that dies soon after it came up counts as a failed attempt, so a
		// broker that accepts and then drops causes no tight loop.
		for {
			if cn != nil || attempt > 0 {
				attempt++
				if !sleepCtx(ctx, c.cfg.backoff.Delay(attempt)) {
					return
				}
			} else {
				attempt++ // the first background attempt goes at once
			}
			c.sweepExpired()
			if fn := c.cfg.onReconnect; fn != nil {
				n, broker := attempt, c.nextBroker()
				c.events.post(func() { fn(n, broker) })
			}
			next, err := c.dialAny(ctx)
			if err == nil {
				cn = next
				break
			}
			if ctx.Err() != nil {
				return
			}
			if !retryable(err) {
				// A refusal about who we are repeats itself; keep trying, but slowly, so a
				// wrong credential is a clear error in the callbacks, not a storm.
				attempt = max(attempt, 8)
			}
		}
		c.install(cn)
		// Reset the backoff only once the connection has proved itself.
		select {
		case <-cn.closing:
		case <-time.After(c.cfg.backoff.Delay(1) + time.Second):
			attempt = 0
		}
	}
}

// watch waits for cn to die and reports whether the supervisor should reconnect.
func (c *Client) watch(ctx context.Context, cn *conn) bool {
	<-cn.closing
	cn.wait()
	reason := cn.reason()
	c.uninstall(cn)
	if ctx.Err() != nil {
		return false
	}
	if s := c.st; s != nil {
		s.ConnectionLost.Add(1)
	}
	c.log.Warn("tern: connection lost", "err", reason)
	if fn := c.cfg.onDown; fn != nil {
		keep := make(chan bool, 1)
		c.events.post(func() { keep <- fn(reason) })
		select {
		case k := <-keep:
			if !k {
				c.shutdown(ErrConnectionLost, c.sessionOutlives(nil))
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// nextBroker names the broker the next attempt starts with, for callbacks.
func (c *Client) nextBroker() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.redirect != nil {
		return redact(c.redirect)
	}
	return redact(c.brokers[c.brokerAt%len(c.brokers)])
}

// SetBrokers replaces the failover list. The live connection is kept; the next connection
// attempt uses the new list, starting at a random broker, and forgets any server redirect.
func (c *Client) SetBrokers(rawURLs ...string) error {
	if len(rawURLs) == 0 {
		return fmt.Errorf("%w: SetBrokers needs at least one URL", ErrInvalidOption)
	}
	list := make([]*url.URL, 0, len(rawURLs))
	for _, raw := range rawURLs {
		u, err := parseBroker(raw)
		if err != nil {
			return err
		}
		if err := c.cfg.checkTransport(u); err != nil {
			return err
		}
		list = append(list, u)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.brokers = list
	c.brokerAt = rand.IntN(len(list))
	c.brokersGen++
	c.redirect = nil // the owner's list wins over a server's reference, even a pending one
	return nil
}

// install makes cn the live connection: session state is resumed or rebuilt, then the
// connection's goroutines start.
func (c *Client) install(cn *conn) {
	info := cn.info
	if !info.SessionPresent && c.store != nil {
		// Before anything is sent on this connection (the store's contract).
		if err := c.store.Reset(); err != nil {
			c.log.Error("tern: store reset failed", "err", err)
		}
	}
	c.mu.Lock()
	if c.closed {
		// Disconnect won the race with this attempt.
		c.mu.Unlock()
		cn.close(ErrClosed)
		return
	}
	if s := c.st; s != nil {
		// Counted before the connection carries anything: whoever sees an effect of it
		// (Connect returning, a publish acknowledged over it) sees it counted.
		s.Connects.Add(1)
	}
	c.connGen++
	cn.gen = c.connGen
	c.clientID = info.ClientID
	c.info.Store(info)
	c.conn = cn
	c.sendQuota = int(info.ReceiveMaximum)
	c.acks.reset()
	if !info.SessionPresent {
		// The broker has no session: nothing it sent us is pending any more, and it holds
		// no subscription (the live ones are subscribed again below).
		clear(c.inQoS2)
		c.forgetBrokerSubsLocked()
	}
	c.inCount = 0
	for _, in := range c.inQoS2 {
		if !in.recd {
			c.inCount++ // received, not yet acknowledged by the application
		}
	}
	cn.start()
	c.resendLocked(cn, info.SessionPresent)
	c.sendEarlyLocked(cn)
	for id, r := range c.requests {
		if err := requestFits(info, r.pkt); err != nil {
			c.log.Warn("tern: request failed: too large for this broker", "err", err)
			r.err = err
			close(r.done)
			delete(c.requests, id)
			c.idFreedLocked()
			if r.sub != nil {
				c.settleLater(r.sub, err)
			}
			continue
		}
		cn.w.sendRequest(r.pkt.AppendTo(nil))
		c.requestWrittenLocked(r.pkt)
	}
	c.grantQuotaLocked()
	close(c.up)
	resubscribe := !info.SessionPresent && c.connGen > 1
	c.mu.Unlock()

	c.log.Info("tern: connected", "broker", info.Broker, "session_present", info.SessionPresent,
		"receive_maximum", info.ReceiveMaximum)
	if resubscribe {
		c.resubscribeAll()
	}
	if fn := c.cfg.onUp; fn != nil {
		c.events.post(func() { fn(info) })
	}
}

// resendLocked writes the outbound session to a new connection in its original order: with
// the session resumed, PUBREL for QoS 2 messages past PUBREC and PUBLISH with DUP for the
// rest (§4.4); with the session lost, QoS 2 messages past PUBREC are complete (the broker
// took them) and the others are published anew, or failed, by policy. Expired messages are
// completed instead of sent.
func (c *Client) resendLocked(cn *conn, resumed bool) {
	now := time.Now()
	for om := c.head; om != nil; {
		next := om.next
		switch {
		case !om.stored:
			// Its publisher is storing it and writes it when done.
		case om.releasing && resumed:
			// Its RecordReleased is being stored; PUBREL goes when it is (releaseStored).
		case om.released && resumed:
			rel := packet.Ack{Kind: packet.PUBREL, PacketID: om.id}
			cn.w.sendUrgent(rel.AppendTo(nil))
		case (om.released || om.releasing) && om.buf != nil:
			c.releasedSessionLostLocked(cn, om)
		case om.released || om.releasing:
			// Restored from a store after PUBREC: the bytes are gone, nothing can be resent,
			// and the broker may have dropped the message with the session. Not delivered as
			// far as anyone can tell: failed, counted and logged.
			c.log.Warn("tern: QoS 2 message restored past PUBREC cannot be sent again: the broker lost the session, and the message may be lost with it",
				"id", om.id)
			c.completeLocked(om, ErrSessionLost)
		case c.expiredLocked(om, now):
		case !resumed && c.cfg.sessionLoss == FailPending:
			c.completeLocked(om, ErrSessionLost)
		default:
			// Checked against this broker's limits: it may be stricter than the one the
			// message was accepted or first sent under, or the message comes from the store.
			c.sendOutLocked(cn, om, resumed && om.sent)
		}
		om = next
	}
}

// releasedSessionLostLocked settles a QoS 2 message the broker acknowledged with PUBREC when
// the broker comes back without the session, before PUBCOMP. The broker may not have passed
// it on: Mosquitto, for one, keeps an incoming QoS 2 message until PUBREL and drops it with a
// session that ends. Under Republish it is sent again as a new exchange (delivered at least
// once, possibly twice, never lost); under FailPending it fails with ErrSessionLost. A
// release record being stored meanwhile is overtaken: the publish record is put back first.
func (c *Client) releasedSessionLostLocked(cn *conn, om *outMsg) {
	if c.cfg.sessionLoss == FailPending {
		c.completeLocked(om, ErrSessionLost)
		return
	}
	om.released, om.releasing = false, false
	om.relGen++ // a release record still being stored reports to nobody
	if c.store != nil {
		rec := StoreRecord{Kind: RecordPublish, ID: om.id, Seq: om.seq, Packet: om.buf.B, Time: om.born}
		if err := c.store.Put(rec); err != nil {
			c.completeLocked(om, fmt.Errorf("tern: store: %w", err))
			return
		}
	}
	c.sendOutLocked(cn, om, false)
}

// expiredLocked completes om if its message expiry or the in-flight TTL has passed, and
// reports whether it did. Only for messages not outstanding on a live connection: those are
// settled by the broker's acknowledgement or by the connection's end.
func (c *Client) expiredLocked(om *outMsg, now time.Time) bool {
	if om.released || om.releasing {
		return false
	}
	switch {
	case !om.expires.IsZero() && !now.Before(om.expires):
		c.completeLocked(om, ErrMessageExpired)
		return true
	case c.cfg.inflightTTL > 0 && now.Sub(om.born) >= c.cfg.inflightTTL:
		c.completeLocked(om, ErrInflightTTL)
		return true
	}
	return false
}

// sweepExpired completes expired messages while no connection is up.
func (c *Client) sweepExpired() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return
	}
	for om := c.head; om != nil; {
		next := om.next
		if om.stored {
			c.expiredLocked(om, now)
		}
		om = next
	}
}

// restore loads the session from the store before the first connection.
func (c *Client) restore() error {
	if c.store == nil {
		return nil
	}
	recs, err := c.store.Load()
	if err != nil {
		return fmt.Errorf("tern: load session: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		switch r.Kind {
		case RecordPublish, RecordReleased:
			if _, dup := c.inflight[r.ID]; dup || r.ID == 0 {
				continue
			}
			om := &outMsg{id: r.ID, seq: r.Seq, born: r.Time, stored: true, sent: true,
				released: r.Kind == RecordReleased, qos: 2, tok: &PublishToken{done: make(chan struct{})}, restored: true}
			if r.Kind == RecordPublish {
				var p packet.Publish
				if len(r.Packet) < 2 || p.Decode(r.Packet[0]&0x0F, r.Packet[1+vbiBytes(len(r.Packet)):]) != nil || p.QoS == 0 {
					c.log.Error("tern: unreadable stored publish dropped", "id", r.ID)
					c.store.Delete(r.Kind, r.ID)
					continue
				}
				om.qos = p.QoS
				om.buf = packet.GetBuffer(len(r.Packet))
				copy(om.buf.B, r.Packet)
				om.buf.B[0] &^= 0x08
				om.idOff = 1 + vbiBytes(len(r.Packet)) + 2 + len(p.Topic)
				if p.MessageExpiry > 0 && !r.Time.IsZero() {
					om.expires = r.Time.Add(time.Duration(p.MessageExpiry) * time.Second)
				}
			}
			c.inflight[r.ID] = om
			c.linkLocked(om)
			c.inUse++
			c.seq = max(c.seq, r.Seq)
		case RecordInbound:
			in := &inbound{c: c, id: r.ID, qos: 2, recd: true, done: true, restored: true}
			c.inQoS2[r.ID] = in
		}
	}
	return nil
}

// retryable decides whether another broker or a later attempt may succeed.
func retryable(err error) bool {
	var rc *ReasonCodeError
	if errors.As(err, &rc) {
		switch rc.Code {
		// Refusals about who we are: trying again only repeats them.
		case packet.BadUserNameOrPassword, packet.NotAuthorized, packet.Banned,
			packet.BadAuthenticationMethod, packet.ClientIdentifierNotValid,
			packet.UnsupportedProtocolVersion:
			return false
		}
		return true
	}
	// An invalid option stays invalid.
	return !errors.Is(err, ErrInvalidOption)
}

// uninstall detaches a dead connection from the session.
func (c *Client) uninstall(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == cn {
		c.conn = nil
		c.up = make(chan struct{})
		c.acks.reset()
		// A request its caller gave up is answered on its own connection or never: its
		// identifier is free now, and it is not sent again.
		for id, r := range c.requests {
			if r.cancelled {
				delete(c.requests, id)
				c.idFreedLocked()
			}
		}
	}
}

// resubscribeAll subscribes every live subscription again after the broker lost the
// session. Refusals are logged; the subscription keeps waiting for messages.
func (c *Client) resubscribeAll() {
	info := c.info.Load()
	// The packets are built under subMu: a SUBACK arriving meanwhile (a subscription made
	// before Connect, or one whose SUBSCRIBE was pending) writes results under it.
	c.subMu.RLock()
	pkts := make([]*packet.Subscribe, 0, len(c.subs))
	for s := range c.subs {
		p := &packet.Subscribe{SubscriptionID: s.id, UserProperties: s.cfg.props}
		if info != nil && !info.SubscriptionIDs && s.cfg.subID == 0 {
			p.SubscriptionID = 0 // this broker does not take them; routing falls back to filters
		}
		for i, f := range s.filters {
			if s.results != nil && s.results[i].Err != nil {
				continue
			}
			p.Subscriptions = append(p.Subscriptions, packet.Subscription{Filter: f.Topic, QoS: f.QoS,
				NoLocal: f.NoLocal, RetainAsPublished: f.RetainAsPublished, RetainHandling: f.RetainHandling})
		}
		if len(p.Subscriptions) > 0 {
			pkts = append(pkts, p)
		}
	}
	c.subMu.RUnlock()
	for _, p := range pkts {
		c.bg.Add(1)
		go func() {
			defer c.bg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.connectTimeout)
			defer cancel()
			res, err := c.request(ctx, p)
			if err != nil {
				c.log.Warn("tern: resubscribe failed", "err", err)
				return
			}
			for i, code := range res.(*packet.Suback).ReasonCodes {
				if code.IsError() && i < len(p.Subscriptions) {
					c.log.Warn("tern: resubscribe refused", "filter", p.Subscriptions[i].Filter, "reason", code.String())
				}
			}
		}()
	}
}
