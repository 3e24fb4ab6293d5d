package tern

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ternmq/tern/packet"
)

// PublishOptions is one message to publish with its MQTT 5 properties.
type PublishOptions struct {
	Topic   string
	Payload []byte
	QoS     byte // 0, 1 or 2
	Retain  bool

	PayloadFormat   byte          // 1: the payload is UTF-8 text
	MessageExpiry   time.Duration // lifetime at the broker, whole seconds; 0: none
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []packet.UserProperty
}

// PublishToken is the outcome of an asynchronous publish. It resolves exactly once: for
// QoS 1 on PUBACK, for QoS 2 on PUBCOMP, or with an error.
type PublishToken struct {
	done chan struct{}
	err  error
}

// Done returns a channel closed when the outcome is known.
func (t *PublishToken) Done() <-chan struct{} { return t.done }

// Err returns the outcome once Done is closed: nil, a *ReasonCodeError refusal, or the
// reason the message was given up. Before that it returns nil.
func (t *PublishToken) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// Wait blocks until the outcome is known or ctx ends. A ctx error says nothing about the
// message, which stays in flight and may still be delivered.
func (t *PublishToken) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var resolvedToken = func() *PublishToken {
	t := &PublishToken{done: make(chan struct{})}
	close(t.done)
	return t
}()

// outMsg is an outbound QoS 1 or 2 publish from the moment it holds a packet identifier until
// its final acknowledgement. It is guarded by Client.mu.
type outMsg struct {
	id         uint16
	qos        byte
	seq        uint64         // send order, persisted with the store
	buf        *packet.Buffer // the encoded PUBLISH without alias, DUP clear
	idOff      int            // offset of the packet identifier in buf
	born       time.Time      // when it was published
	expires    time.Time      // when its message expiry passes; zero: never
	stored     bool           // in the store (always true without one)
	sent       bool           // written on some connection at least once
	releasing  bool           // QoS 2: PUBREC received, RecordReleased not yet durable
	released   bool           // QoS 2: PUBREC received, RecordReleased stored, PUBREL sent
	relGen     uint32         // QoS 2: counts PUBRECs whose RecordReleased was stored; a report for an older one is stale
	done       bool           // completed
	restored   bool           // loaded from the store at start
	prev, next *outMsg        // send order, for replay
	tok        *PublishToken
}

// Publish sends one message and waits for the outcome its QoS promises: QoS 0 returns once
// the message is queued for writing (see Flush), QoS 1 once the broker sent PUBACK, QoS 2
// once it sent PUBCOMP. A refusal is a *ReasonCodeError. Publish waits, bounded by ctx, for a
// connection and for room in the broker's Receive Maximum window. If ctx ends while a QoS 1
// or 2 message is in flight, Publish returns the ctx error and the message stays in the
// session: it may still be delivered. Safe for concurrent use.
func (c *Client) Publish(ctx context.Context, m PublishOptions) error {
	if pm := c.poolRoute(m.Topic); pm != nil {
		return pm.Publish(ctx, m)
	}
	if m.QoS == 0 {
		return c.publish0(ctx, &m)
	}
	tok, err := c.publishAsync(ctx, m)
	if err != nil {
		return err
	}
	return tok.Wait(ctx)
}

// PublishAsync queues one message and returns as soon as it holds a place in the broker's
// Receive Maximum window, so a single goroutine can keep the whole window busy. The token
// resolves with the outcome. It waits, bounded by ctx, only for a connection and for room in
// the window. The payload is copied; the caller may reuse it when PublishAsync returns.
func (c *Client) PublishAsync(ctx context.Context, m PublishOptions) (*PublishToken, error) {
	if pm := c.poolRoute(m.Topic); pm != nil {
		return pm.PublishAsync(ctx, m)
	}
	return c.publishAsync(ctx, m)
}

// publishAsync is PublishAsync on this client's own connection.
func (c *Client) publishAsync(ctx context.Context, m PublishOptions) (*PublishToken, error) {
	if m.QoS == 0 {
		return resolvedToken, c.publish0(ctx, &m)
	}
	p := toPacket(&m)
	if err := c.checkPublish(&p); err != nil {
		return nil, err
	}
	// Encode outside the session lock with a zero identifier; it is patched in below.
	p.PacketID = 0xFFFF
	n := p.Len()
	buf := packet.GetBuffer(n)
	buf.B = p.AppendTo(buf.B[:0])
	idOff := 1 + vbiBytes(n) + 2 + len(p.Topic)

	if err := c.acquireQuota(ctx); err != nil {
		buf.Release()
		return nil, err
	}
	om := &outMsg{qos: m.QoS, buf: buf, idOff: idOff, born: time.Now(), stored: c.store == nil,
		tok: &PublishToken{done: make(chan struct{})}}
	if m.MessageExpiry > 0 {
		om.expires = om.born.Add(m.MessageExpiry.Truncate(time.Second))
	}
	c.mu.Lock()
	for {
		var err error
		if c.closed {
			err = ErrClosed
		} else if id, ok := c.allocIDLocked(); ok {
			om.id = id
			break
		} else {
			err = c.waitIDLocked(ctx)
		}
		if err != nil {
			c.releaseQuotaLocked()
			c.mu.Unlock()
			buf.Release()
			return nil, err
		}
	}
	c.seq++
	om.seq = c.seq
	buf.B[idOff], buf.B[idOff+1] = byte(om.id>>8), byte(om.id)
	c.inflight[om.id] = om
	c.linkLocked(om)
	if c.store == nil {
		if cn := c.conn; cn != nil {
			if err := c.sendOutLocked(cn, om, false); err != nil {
				c.mu.Unlock()
				return nil, err
			}
		}
		c.mu.Unlock()
		return om.tok, nil
	}
	c.mu.Unlock()

	// Write-ahead: stored before its first byte is written, outside the session lock so
	// many publishers share one sync.
	err := c.store.Put(StoreRecord{Kind: RecordPublish, ID: om.id, Seq: om.seq, Packet: buf.B, Time: om.born})
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("tern: store publish: %w", err)
		c.completeLocked(om, err)
		return nil, err
	}
	if om.done {
		// Failed meanwhile (Disconnect); the token says why. The record stays only if the
		// session does.
		if !c.keep {
			c.store.Delete(RecordPublish, om.id)
		}
		return om.tok, nil
	}
	om.stored = true
	if cn := c.conn; cn != nil {
		if err := c.sendOutLocked(cn, om, false); err != nil {
			return nil, err
		}
	}
	return om.tok, nil
}

// vbiBytes returns the size of the Remaining Length field of a whole packet of n bytes.
func vbiBytes(n int) int {
	for k := 1; k <= 4; k++ {
		if packet.VBILen(n-1-k) == k {
			return k
		}
	}
	return 4
}

// publish0 sends a QoS 0 message straight into the write buffer.
func (c *Client) publish0(ctx context.Context, m *PublishOptions) error {
	p := toPacket(m)
	if err := validatePublish(&p); err != nil {
		return err
	}
	if c.speaks311() {
		if err := check311Publish(&p); err != nil {
			return err
		}
	}
	cn, err := c.waitConn(ctx)
	if err != nil {
		return err
	}
	if cn.ver == packet.Version311 {
		// Checked again: under fallback the version is known only now.
		if err := check311Publish(&p); err != nil {
			return err
		}
		p.Version = packet.Version311
	}
	// Checked against the connection that carries it: it may be the first, or another
	// broker than the last CONNACK's.
	size := 0
	if cn.info.MaximumPacketSize > 0 {
		size = p.Len()
	}
	if err := brokerLimits(cn.info, 0, p.Retain, size); err != nil {
		return err
	}
	alias := useAlias(cn, size)
	if c.cfg.writeOverflow == WriteFailFast {
		_, err = cn.w.tryReserve()
	} else {
		_, err = cn.w.reserve(ctx)
	}
	if err != nil {
		return err
	}
	if alias {
		cn.aliases.apply(&p)
	}
	cn.w.buf = p.AppendTo(cn.w.buf)
	cn.w.commit()
	if s := c.st; s != nil {
		s.PublishSent.Add(1)
	}
	return nil
}

// Flush waits until every packet queued so far on the current connection has been handed
// to the operating system, or ctx ends.
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	if cn == nil {
		return ErrNotConnected
	}
	return errors.Join(cn.w.flush(ctx), c.flushPool(ctx))
}

func toPacket(m *PublishOptions) packet.Publish {
	return packet.Publish{
		Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		PayloadFormat: m.PayloadFormat, MessageExpiry: uint32(m.MessageExpiry / time.Second),
		ContentType: m.ContentType, ResponseTopic: m.ResponseTopic,
		CorrelationData: m.CorrelationData, UserProperties: m.UserProperties,
	}
}

// checkPublish validates a message against the protocol and against what the broker
// granted in its last CONNACK, so a message that cannot go fails before it is accepted. The
// connection that carries it checks again when it is written (writeOutLocked, publish0):
// before the first CONNACK, or after a reconnection, the broker may be another.
func (c *Client) checkPublish(p *packet.Publish) error {
	if err := validatePublish(p); err != nil {
		return err
	}
	if c.speaks311() {
		if err := check311Publish(p); err != nil {
			return err
		}
	}
	if info := c.info.Load(); info != nil {
		return brokerLimits(info, p.QoS, p.Retain, p.Len())
	}
	return nil
}

// validatePublish checks a message against the protocol's rules.
func validatePublish(p *packet.Publish) error {
	if p.QoS > 2 {
		return invalidMessage("QoS", packet.ErrInvalidQoS)
	}
	if err := packet.ValidateTopicName(p.Topic); err != nil {
		return invalidTopic(p.Topic, err)
	}
	id := p.PacketID
	p.PacketID = 1 // an identifier is required for QoS > 0; it is assigned later
	err := p.ValidateFields()
	p.PacketID = id
	if err != nil {
		return invalidMessage("publish", err)
	}
	return nil
}

// brokerLimits reports why a PUBLISH of the given QoS, retain flag and size (the whole
// packet, without a topic alias) cannot go to the broker that sent info, or nil.
func brokerLimits(info *ConnackInfo, qos byte, retain bool, size int) error {
	if qos > info.MaximumQoS {
		return fmt.Errorf("%w: QoS %d, broker maximum %d", ErrQoSNotSupported, qos, info.MaximumQoS)
	}
	if retain && !info.RetainAvailable {
		return ErrRetainNotSupported
	}
	if max := info.MaximumPacketSize; max > 0 && uint64(size) > uint64(max) {
		return fmt.Errorf("%w: %d bytes, broker maximum %d", ErrPacketTooLarge, size, max)
	}
	return nil
}

// aliasGrowth bounds what a new Topic Alias adds to a PUBLISH: the 3-byte property, plus one
// byte each if the property length and the Remaining Length need a longer encoding.
const aliasGrowth = 5

// useAlias reports whether a PUBLISH of size bytes may carry a topic alias on cn: the
// connection has aliases, and a new one cannot push the packet over the broker's maximum
// (the message then goes out with its topic in full).
func useAlias(cn *conn, size int) bool {
	if cn.aliases == nil {
		return false
	}
	max := cn.info.MaximumPacketSize
	return max == 0 || uint64(size)+aliasGrowth <= uint64(max)
}

// requestFits reports whether a SUBSCRIBE or UNSUBSCRIBE fits the Maximum Packet Size of
// the broker that sent info. For a 3.1.1 broker it makes p a level-4 packet first, and
// refuses with ErrNotInV311 what that would lose (fitRequest311).
func requestFits(info *ConnackInfo, p packet.Packet) error {
	if info.Version == packet.Version311 {
		if err := fitRequest311(p); err != nil {
			return err
		}
	}
	if max := info.MaximumPacketSize; max > 0 {
		if n := p.Len(); uint64(n) > uint64(max) {
			return fmt.Errorf("%w: %s of %d bytes, broker maximum %d", ErrPacketTooLarge, p.Type(), n, max)
		}
	}
	return nil
}

// sendOutLocked writes om to cn, or, when the broker of cn cannot take it (its CONNACK's
// Maximum QoS, Retain Available or Maximum Packet Size), completes it with that error
// without sending it: its record leaves the store, its window place goes to the next
// message, and nothing reaches the broker that would make it disconnect. Caller holds c.mu.
func (c *Client) sendOutLocked(cn *conn, om *outMsg, dup bool) error {
	err := c.writeOutLocked(cn, om, dup)
	if err != nil {
		c.log.Warn("tern: message refused before sending: the broker cannot take it",
			"id", om.id, "broker", cn.info.Broker, "err", err)
		c.completeLocked(om, err)
	}
	return err
}

// writeOutLocked writes a stored publish to cn if the broker's limits allow it; dup marks a
// resend. Caller holds c.mu.
func (c *Client) writeOutLocked(cn *conn, om *outMsg, dup bool) error {
	b := om.buf.B
	if err := brokerLimits(cn.info, om.qos, b[0]&0x01 != 0, len(b)); err != nil {
		return err
	}
	if cn.ver == packet.Version311 {
		return c.writeOut311Locked(cn, om, dup)
	}
	alias := useAlias(cn, len(b))
	cn.w.lock()
	if alias || (om.sent && !om.expires.IsZero()) {
		// Rewrite: aliases belong to the connection and are assigned in write order, under
		// w.mu; a resent message carries its remaining lifetime, not the original.
		var p packet.Publish
		if err := p.Decode(b[0]&0x0F, b[1+vbiBytes(len(b)):]); err == nil {
			if alias {
				cn.aliases.apply(&p)
			}
			if !om.expires.IsZero() {
				left := time.Until(om.expires)
				p.MessageExpiry = uint32(max((left+time.Second-1)/time.Second, 1))
			}
			p.Dup = dup
			if cn.w.err == nil {
				cn.w.buf = p.AppendTo(cn.w.buf)
			}
			cn.w.commit()
			om.sent = true
			c.countSent(dup)
			return nil
		}
	}
	if cn.w.err == nil {
		start := len(cn.w.buf)
		cn.w.buf = append(cn.w.buf, b...)
		if dup {
			cn.w.buf[start] |= 0x08
		}
	}
	cn.w.commit()
	om.sent = true
	c.countSent(dup)
	return nil
}

func (c *Client) countSent(dup bool) {
	if s := c.st; s != nil {
		s.PublishSent.Add(1)
		if dup {
			s.PublishResent.Add(1)
		}
	}
}

// acquireQuota takes one place in the broker's Receive Maximum window, waiting in FIFO order.
func (c *Client) acquireQuota(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if !c.started {
		c.mu.Unlock()
		return ErrNotConnected
	}
	if len(c.quotaQ) == 0 && c.inUse < c.sendQuota {
		c.takeQuotaLocked()
		c.mu.Unlock()
		return nil
	}
	w := &quotaWaiter{ch: make(chan struct{})}
	c.quotaQ = append(c.quotaQ, w)
	c.mu.Unlock()
	select {
	case <-w.ch:
		if w.err != nil {
			return w.err
		}
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if w.granted {
			c.releaseQuotaLocked()
			return ctx.Err()
		}
		for i, q := range c.quotaQ {
			if q == w {
				c.quotaQ = append(c.quotaQ[:i], c.quotaQ[i+1:]...)
				break
			}
		}
		return ctx.Err()
	}
}

type quotaWaiter struct {
	ch      chan struct{}
	granted bool
	err     error
}

// releaseQuotaLocked frees one place and hands free places to waiters in order.
func (c *Client) releaseQuotaLocked() {
	c.inUse--
	c.grantQuotaLocked()
}

func (c *Client) grantQuotaLocked() {
	for len(c.quotaQ) > 0 && c.inUse < c.sendQuota {
		w := c.quotaQ[0]
		c.quotaQ[0] = nil
		c.quotaQ = c.quotaQ[1:]
		w.granted = true
		c.takeQuotaLocked()
		close(w.ch)
	}
}

func (c *Client) takeQuotaLocked() {
	c.inUse++
	if c.inUse > c.inUseHigh {
		c.inUseHigh = c.inUse
	}
}

// maxPacketIDs is how many packet identifiers exist (1 to 65,535).
const maxPacketIDs = 65535

// allocIDLocked returns a packet identifier not used by any publish or request in flight, or
// false when all are in use (see waitIDLocked). An identifier stays in use until its
// exchange ends, including a cancelled request's until its answer or its connection's end
// ([MQTT-2.2.1-3]). The search ends: at least one identifier is free.
func (c *Client) allocIDLocked() (uint16, bool) {
	if len(c.inflight)+len(c.requests) >= maxPacketIDs {
		return 0, false
	}
	for {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if _, used := c.inflight[c.nextID]; used {
			continue
		}
		if _, used := c.requests[c.nextID]; used {
			continue
		}
		return c.nextID, true
	}
}

// waitIDLocked waits, with c.mu released, until a packet identifier is freed, the client
// closes, or ctx ends (its error is returned). Called and returns with c.mu held; the caller
// tries allocIDLocked again. All 65,535 can be in use when the broker grants the full
// Receive Maximum and SUBSCRIBE/UNSUBSCRIBE fill the rest.
func (c *Client) waitIDLocked(ctx context.Context) error {
	if c.idFreed == nil {
		c.idFreed = make(chan struct{})
	}
	ch := c.idFreed
	c.mu.Unlock()
	select {
	case <-ch:
		c.mu.Lock()
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		return ctx.Err()
	}
}

// idFreedLocked wakes the callers waiting for a packet identifier.
func (c *Client) idFreedLocked() {
	if c.idFreed != nil {
		close(c.idFreed)
		c.idFreed = nil
	}
}

func (c *Client) linkLocked(om *outMsg) {
	if c.tail == nil {
		c.head, c.tail = om, om
		return
	}
	om.prev = c.tail
	c.tail.next = om
	c.tail = om
}

func (c *Client) unlinkLocked(om *outMsg) {
	if om.prev != nil {
		om.prev.next = om.next
	} else {
		c.head = om.next
	}
	if om.next != nil {
		om.next.prev = om.prev
	} else {
		c.tail = om.prev
	}
	om.prev, om.next = nil, nil
}

// completeLocked ends an outbound publish with err and frees its identifier and window place.
// Completing twice does nothing.
func (c *Client) completeLocked(om *outMsg, err error) {
	if om.done {
		return
	}
	om.done = true
	if c.store != nil && om.stored {
		// Need not be durable (see Store): a lost deletion only causes a harmless resend.
		if derr := c.store.Delete(RecordPublish, om.id); derr != nil {
			c.log.Warn("tern: store delete failed", "id", om.id, "err", derr)
		}
	}
	delete(c.inflight, om.id)
	c.idFreedLocked()
	c.unlinkLocked(om)
	om.buf.Release()
	om.buf = nil
	c.releaseQuotaLocked()
	// Counted before the token resolves, so a caller whose Publish has returned reads the
	// count that includes its message.
	if s := c.st; s != nil {
		if err == nil {
			s.PublishAcked.Add(1)
		} else {
			s.PublishFailed.Add(1)
		}
	}
	om.tok.err = err
	close(om.tok.done)
}

var errAckMismatch = &packet.Error{Code: packet.ProtocolError, Detail: "acknowledgement does not fit the publish's QoS or state"}

// handleAck processes PUBACK, PUBREC and PUBCOMP for an outbound publish.
func (c *Client) handleAck(cn *conn, a *packet.Ack) error {
	if a.Kind == packet.PUBREC {
		return c.handlePubrec(cn, a)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	om := c.inflight[a.PacketID]
	if om == nil {
		c.log.Debug("tern: acknowledgement for an unknown packet identifier", "type", a.Kind.String(), "id", a.PacketID)
		return nil
	}
	switch a.Kind {
	case packet.PUBACK:
		if om.qos != 1 {
			return errAckMismatch
		}
		if a.ReasonCode.IsError() {
			c.completeLocked(om, ackRefusal(a))
		} else {
			c.completeLocked(om, nil)
		}
	case packet.PUBCOMP:
		if om.qos != 2 || !om.released {
			return errAckMismatch
		}
		// After a reconnect, "packet identifier not found" answers a PUBREL the broker had
		// already completed (§4.3.3): the message was delivered.
		if a.ReasonCode.IsError() && a.ReasonCode != packet.PacketIdentifierNotFound {
			c.completeLocked(om, ackRefusal(a))
		} else {
			c.completeLocked(om, nil)
		}
	}
	return nil
}

// ackRefusal is the error of a publish the broker refused with a's reason code.
func ackRefusal(a *packet.Ack) error {
	return &ReasonCodeError{Op: "publish", Code: a.ReasonCode, Reason: a.ReasonString, UserProperties: a.UserProperties}
}

// handlePubrec processes PUBREC for an outbound QoS 2 publish. With a Store, PUBREL waits
// for the RecordReleased that replaces the publish's record (see putReleased); the read loop
// goes on meanwhile.
func (c *Client) handlePubrec(cn *conn, a *packet.Ack) error {
	c.mu.Lock()
	om := c.inflight[a.PacketID]
	switch {
	case om == nil:
		// Tell the broker it can forget the exchange (§4.3.3).
		rel := packet.Ack{Version: cn.ver, Kind: packet.PUBREL, PacketID: a.PacketID, ReasonCode: packet.PacketIdentifierNotFound}
		cn.w.sendUrgent(rel.AppendTo(nil))
		c.mu.Unlock()
		c.log.Debug("tern: acknowledgement for an unknown packet identifier", "type", a.Kind.String(), "id", a.PacketID)
		return nil
	case om.qos != 2:
		c.mu.Unlock()
		return errAckMismatch
	case a.ReasonCode.IsError():
		// Even "packet identifier in use" to a resend is a refusal: mochi answers so
		// without holding the message, and taking it for success loses the message.
		c.completeLocked(om, ackRefusal(a))
		c.mu.Unlock()
		return nil
	case om.releasing:
		// A second PUBREC while the record is being stored: its PUBREL goes when it is.
		c.mu.Unlock()
		return nil
	case c.store == nil || om.released:
		// Nothing to store (again): PUBREL goes at once.
		c.releasedLocked(om)
		err := sendPubrel(cn, om.id)
		c.mu.Unlock()
		return err
	}
	om.releasing = true
	om.relGen++
	gen := om.relGen
	rec := StoreRecord{Kind: RecordReleased, ID: om.id, Seq: om.seq, Time: om.born}
	c.mu.Unlock()
	c.putReleased(om, gen, rec)
	return nil
}

// releasedLocked marks om past PUBREC with its RecordReleased stored: PUBREL may be written,
// now and on every resumed session, and the message itself is no longer needed.
func (c *Client) releasedLocked(om *outMsg) {
	om.released = true
	om.releasing = false
	// The bytes stay until PUBCOMP: a broker that loses the session before it has been
	// released may not have passed the message on, and it is then sent again (resendLocked).
}

// sendPubrel writes PUBREL for id to cn, ahead of queued publishes.
func sendPubrel(cn *conn, id uint16) error {
	rel := packet.Ack{Kind: packet.PUBREL, PacketID: id}
	var b [4]byte
	return cn.w.sendUrgent(rel.AppendTo(b[:0]))
}
