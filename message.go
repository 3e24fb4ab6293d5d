package tern

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ternmq/tern/packet"
)

// Message is one received application message, as delivered to one subscription.
//
// Unless the subscription was made with SubZeroCopy, the message owns its memory and may be
// kept as long as needed. With SubZeroCopy, Topic, Payload and the property strings point
// into the read buffer and the Message itself is recycled: none of it may be used after Ack.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retain   bool
	Dup      bool
	PacketID uint16

	PayloadFormat   byte   // 1: the payload is UTF-8 text
	MessageExpiry   uint32 // remaining lifetime in seconds; 0: none
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	SubscriptionIDs []uint32
	UserProperties  []packet.UserProperty

	in       *inbound
	client   *Client // the client that received it
	acked    atomic.Bool
	zeroCopy bool
}

// Client returns the client that received the message: for a ClientGroup subscription, the
// member it came from.
func (m *Message) Client() *Client { return m.client }

// Member returns the name of the ClientGroup member that received the message, or "" for a
// client outside a group.
func (m *Message) Member() string {
	if m.client == nil {
		return ""
	}
	return m.client.cfg.groupMember
}

// Ack acknowledges the message. The client sends PUBACK (QoS 1) or PUBREC (QoS 2) once every
// subscription the message was delivered to has acknowledged it, and sends acknowledgements
// in the order the messages arrived whatever order Ack is called in (MQTT 5 §4.6). Ack is
// idempotent and safe from any goroutine; for QoS 0 it only releases a zero-copy buffer.
// An Ack for a message from a connection that has since closed sends nothing: the broker
// delivers the message again.
func (m *Message) Ack() error {
	if !m.acked.CompareAndSwap(false, true) {
		return nil
	}
	in := m.in
	if m.zeroCopy {
		// The user promised not to touch the message after Ack; recycle it, keeping the
		// slices' capacity for the next message.
		ids, ups := m.SubscriptionIDs[:0], m.UserProperties[:0]
		*m = Message{SubscriptionIDs: ids, UserProperties: ups}
		messagePool.Put(m)
	}
	if in != nil {
		in.release()
	}
	return nil
}

// abandon is Ack for a message that never reached the application because its connection
// closed first (see inbound.release).
func (m *Message) abandon() {
	if in := m.in; in != nil && !m.acked.Load() {
		in.abandoned.Add(1)
	}
	m.Ack()
}

var messagePool = sync.Pool{New: func() any { return new(Message) }}

// inbound tracks one received QoS 1/2 PUBLISH (or a zero-copy QoS 0 one) until every handle
// delivered for it has been acknowledged.
type inbound struct {
	c        *Client
	id       uint16
	qos      byte
	gen      uint64         // connection that must carry the acknowledgement
	refs     atomic.Int32   // handles not yet acknowledged
	frame    *packet.Buffer // zero-copy read buffer, released with the last handle
	done     bool           // guarded by c.mu: every handle acknowledged
	recd     bool           // guarded by c.mu: QoS 2, PUBREC sent
	early    bool           // guarded by c.mu: QoS 2, PUBREL came before PUBREC; completed
	restored bool           // loaded from the store at start
	storing  bool           // guarded by c.mu: QoS 2 with a Store, receipt not yet durable
	// putStarted, guarded by c.mu: the receipt was handed to the Store (after the
	// application acknowledged the message, see release).
	putStarted bool
	// storeFailed, guarded by c.mu: the asynchronous receipt failed; no PUBREC until a
	// resend stores it again.
	storeFailed bool

	handles   int32        // handles delivered for it
	abandoned atomic.Int32 // handles given up because the connection closed first
}

var inboundPool = sync.Pool{New: func() any { return new(inbound) }}

// release drops one handle; the last one frees the buffer and lets the acknowledgement go.
func (in *inbound) release() {
	if in.refs.Add(-1) != 0 {
		return
	}
	if in.frame != nil {
		in.frame.Release()
		in.frame = nil
	}
	if in.qos == 0 {
		*in = inbound{}
		inboundPool.Put(in)
		return
	}
	c := in.c
	c.mu.Lock()
	if in.qos == 2 && in.abandoned.Load() == in.handles && c.inQoS2[in.id] == in {
		// Nobody got it: forget the receipt, so the broker's resend after the reconnect
		// is delivered rather than taken for a duplicate. It stays out of the ack queue,
		// which belongs to the closed connection anyway.
		delete(c.inQoS2, in.id)
		c.inCount--
		if c.store != nil {
			c.store.Delete(RecordInbound, in.id)
		}
		c.mu.Unlock()
		return
	}
	in.done = true
	// The receipt of a QoS 2 message is stored only now that the application has it: a
	// receipt stored earlier would survive a crash before the application took the
	// message, and the next process would take the broker's resend for a duplicate.
	put, id := false, in.id
	if in.storing && !in.putStarted {
		if in.early {
			in.storing = false // released already: nothing left to recognise
		} else {
			in.putStarted, put = true, true
		}
	}
	c.flushAcksLocked()
	c.mu.Unlock()
	if put {
		c.putReceipt(in, id)
	}
}

// ackQueue holds received QoS 1/2 messages in arrival order until they can be acknowledged.
type ackQueue struct {
	items []*inbound
	head  int
}

func (q *ackQueue) push(in *inbound) { q.items = append(q.items, in) }

func (q *ackQueue) reset() {
	clear(q.items)
	q.items, q.head = q.items[:0], 0
}

// flushAcksLocked sends the acknowledgements that have become due: those at the front of the
// arrival order whose handles are all acknowledged. Caller holds c.mu.
func (c *Client) flushAcksLocked() {
	q := &c.acks
	cn := c.conn
	for q.head < len(q.items) && q.items[q.head].done && !q.items[q.head].ackHeld() {
		in := q.items[q.head]
		q.items[q.head] = nil
		q.head++
		if cn == nil || in.gen != cn.gen {
			continue // from a closed connection: the broker will send it again
		}
		if in.early {
			// The broker released it before our PUBREC and got PUBCOMP: the exchange is
			// over, so no PUBREC (it could be taken for a newer message with the same
			// identifier). It leaves the window now that the application acknowledged it.
			c.inCount--
			*in = inbound{}
			inboundPool.Put(in)
			continue
		}
		var b [4]byte
		kind := packet.PUBACK
		if in.qos == 2 {
			kind = packet.PUBREC
			in.recd = true
		}
		// The window counts what the application has not acknowledged: QoS 2 leaves it at
		// PUBREC, not PUBCOMP. Mosquitto 2.0 frees its send quota for QoS 2 at PUBREC and
		// would overrun a window counted to PUBCOMP; the PUBREL that follows is bounded by
		// the packet identifiers anyway.
		c.inCount--
		a := packet.Ack{Kind: kind, PacketID: in.id}
		cn.w.sendUrgent(a.AppendTo(b[:0]))
		if s := c.st; s != nil {
			s.AcksSent.Add(1)
		}
		if in.qos == 1 {
			*in = inbound{}
			inboundPool.Put(in)
		}
	}
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 1024 && q.head > len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
}

var (
	errInboundQuota = &packet.Error{Code: packet.ReceiveMaximumExceeded,
		Detail: "more unacknowledged QoS 1/2 messages than the Receive Maximum"}
	errAliasInvalid = &packet.Error{Code: packet.TopicAliasInvalid,
		Detail: "topic alias 0 or above the Topic Alias Maximum"}
	errAliasUnknown = &packet.Error{Code: packet.ProtocolError,
		Detail: "empty topic with a topic alias that was never set"}
	errEmptyTopic = &packet.Error{Code: packet.ProtocolError,
		Detail: "empty topic without a topic alias"}
)

// resolveAlias applies inbound topic alias rules to p (MQTT 5 §3.3.2.3.4).
func (cn *conn) resolveAlias(p *packet.Publish) error {
	if p.TopicAlias == 0 {
		if p.Topic == "" {
			return errEmptyTopic
		}
		return nil
	}
	if int(p.TopicAlias) >= len(cn.inAlias) {
		return errAliasInvalid
	}
	if p.Topic == "" {
		t := cn.inAlias[p.TopicAlias]
		if t == "" {
			return errAliasUnknown
		}
		p.Topic = t
		return nil
	}
	// The topic points into the frame; the table keeps its own copy.
	if cn.inAlias[p.TopicAlias] != p.Topic {
		cn.inAlias[p.TopicAlias] = string([]byte(p.Topic))
	}
	return nil
}

// handlePublish routes one inbound PUBLISH. It owns f from here on.
func (c *Client) handlePublish(cn *conn, f *packet.Frame, p *packet.Publish) error {
	if err := cn.resolveAlias(p); err != nil {
		return err
	}
	if s := c.st; s != nil {
		s.Received.Add(1)
	}
	c.mu.Lock()
	if p.QoS == 2 {
		in := c.inQoS2[p.PacketID]
		if in != nil && !p.Dup && in.restored {
			// [MQTT-3.3.1-1] A re-delivery always carries DUP, so this is a new message and
			// the record, loaded from the store, is stale: its exchange ended but the end
			// was not recorded (a deletion lost in a crash). Forget it. A record of this
			// process's own is exact, and the broker cannot reuse its identifier before
			// PUBCOMP: a PUBLISH without DUP is then a resend whose DUP the broker forgot.
			delete(c.inQoS2, p.PacketID)
			if !in.recd {
				c.inCount--
			}
			in = nil
		}
		if in != nil {
			// A resend of a message already delivered: never deliver it twice. Answer
			// it once the original is acknowledged, on this connection. Its record is
			// counted in the window already, so a resend never overruns it: after a
			// reconnection the broker resends a full window.
			f.Release()
			if in.recd {
				c.mu.Unlock()
				a := packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID}
				return cn.w.sendUrgent(a.AppendTo(nil))
			}
			retry := in.storeFailed && !in.storing
			if in.gen != cn.gen {
				// Queued on a connection that has closed: queue it again on this one.
				in.gen = cn.gen
				c.acks.push(in)
				c.flushAcksLocked()
			}
			if retry {
				in.storeFailed, in.storing = false, true
			}
			c.mu.Unlock()
			if retry {
				c.putReceipt(in, p.PacketID)
			}
			return nil
		}
	}
	if p.QoS > 0 {
		c.inCount++
		// A resend (DUP) is part of the broker's in-flight set from an earlier connection:
		// refusing it can only make the broker resend it on the next one, for ever.
		// A 3.1.1 broker was never told a Receive Maximum: no overrun to speak of.
		if c.inCount > int(c.cfg.receiveMax) && !p.Dup && cn.ver != packet.Version311 {
			if c.cfg.strictReceiveMax {
				c.mu.Unlock()
				return errInboundQuota
			}
			// Mosquitto 2.0 and mochi both overrun a client's window. Disconnecting would
			// throw away everything in flight for a violation that costs nothing here:
			// memory stays bounded by the subscription buffers and their hold caps, past
			// which delivery blocks the read loop.
			if !cn.overrunLogged {
				cn.overrunLogged = true
				c.log.Warn("tern: broker exceeds the Receive Maximum; tolerated (see WithStrictReceiveMaximum)",
					"receive_maximum", c.cfg.receiveMax)
			}
			if s := c.st; s != nil {
				s.ReceiveMaxExceeded.Add(1)
			}
		}
	}
	c.mu.Unlock()

	c.subMu.RLock()
	matches := c.route(p, c.matchBuf[:0])
	c.matchBuf = matches[:0]
	c.subMu.RUnlock()

	zeroCopy := false
	for _, s := range matches {
		zeroCopy = zeroCopy || s.zeroCopy
	}
	var in *inbound
	if p.QoS > 0 || zeroCopy {
		in = inboundPool.Get().(*inbound)
		in.c, in.id, in.qos, in.gen = c, p.PacketID, p.QoS, cn.gen
		n := int32(len(matches))
		if n == 0 {
			n = 1 // released below, so the message is acknowledged in order
		}
		in.refs.Store(n)
		in.handles = n
		in.abandoned.Store(0)
		if zeroCopy {
			in.frame = f.Detach()
		}
		if p.QoS > 0 {
			c.mu.Lock()
			c.acks.push(in)
			if p.QoS == 2 {
				c.inQoS2[p.PacketID] = in
				// Write-ahead: with a Store, the receipt is stored once the application
				// has acknowledged the message (release), and PUBREC waits for it.
				in.storing = c.store != nil
			}
			c.mu.Unlock()
		}
	}
	if len(matches) == 0 {
		c.deliverUnrouted(cn, p, in)
		f.Release() // the catch-all's message is a copy
		return nil
	}
	var shared *packet.Publish // one copy serves every subscription that does not alias
	for _, s := range matches {
		m := c.newMessage(s, p, in, &shared)
		s.deliver(m, cn)
	}
	f.Release() // no-op when detached for zero-copy
	return nil
}

// autoSubIDMax bounds the identifiers Tern picks, leaving the rest of the range free.
const autoSubIDMax = 1 << 20

// route returns the subscriptions a message is for: by its subscription identifiers when it
// carries known ones (each copy the broker sends is for specific subscriptions), else by
// matching its topic against every filter. Caller holds subMu.
//
// An identifier names the filters the broker matched: those of the subscriptions that
// carry it, and its orphans. Each such filter that matches the topic routes the message to
// every local subscription of that exact filter: the broker holds one subscription per
// filter, under the identifier of the last SUBSCRIBE ([MQTT-3.8.4-3]), so two local
// subscriptions of one filter share its copies. A filter that does not match the topic does
// not count: a resumed session delivers messages queued under the identifiers of an earlier
// process, which may name other subscriptions in this one.
func (c *Client) route(p *packet.Publish, dst []*Subscription) []*Subscription {
	for _, id := range p.SubscriptionIDs {
		for _, s := range c.byID[id] {
			for i := range s.filters {
				if s.results != nil && s.results[i].Err != nil {
					continue // refused: the broker does not hold it for s
				}
				dst = c.routeFilter(s.filters[i].Topic, p.Topic, dst)
			}
		}
		for _, f := range c.orphans[id] {
			dst = c.routeFilter(f, p.Topic, dst)
		}
	}
	if len(dst) > 0 {
		return dst
	}
	return c.routes.Match(p.Topic, dst)
}

// routeFilter adds to dst, once each, the subscriptions of filter when it matches topic.
// Caller holds subMu.
func (c *Client) routeFilter(filter, topic string, dst []*Subscription) []*Subscription {
	if !packet.MatchTopic(filter, topic) {
		return dst
	}
	for _, s := range c.byFilter[filter] {
		if !slices.Contains(dst, s) {
			dst = append(dst, s)
		}
	}
	return dst
}

// newMessage builds the handle one subscription receives.
func (c *Client) newMessage(s *subscription, p *packet.Publish, in *inbound, shared **packet.Publish) *Message {
	src := p
	var m *Message
	if s.zeroCopy {
		m = messagePool.Get().(*Message)
		m.zeroCopy = true
	} else {
		if *shared == nil {
			*shared = p.Clone()
		}
		src = *shared
		m = new(Message)
	}
	m.Topic, m.Payload, m.QoS, m.Retain, m.Dup, m.PacketID = src.Topic, src.Payload, src.QoS, src.Retain, src.Dup, src.PacketID
	m.PayloadFormat, m.MessageExpiry, m.ContentType = src.PayloadFormat, src.MessageExpiry, src.ContentType
	m.ResponseTopic, m.CorrelationData = src.ResponseTopic, src.CorrelationData
	// The read loop reuses src's slices, so the message needs its own; a recycled
	// zero-copy message brings the capacity of its previous life.
	m.SubscriptionIDs = append(m.SubscriptionIDs[:0], src.SubscriptionIDs...)
	m.UserProperties = append(m.UserProperties[:0], src.UserProperties...)
	if len(m.SubscriptionIDs) == 0 && !s.zeroCopy {
		m.SubscriptionIDs = nil
	}
	if len(m.UserProperties) == 0 && !s.zeroCopy {
		m.UserProperties = nil
	}
	m.in = in
	m.client = c
	return m
}

// handlePubrel completes an inbound QoS 2 exchange with PUBCOMP.
func (c *Client) handlePubrel(cn *conn, a *packet.Ack) error {
	c.mu.Lock()
	in := c.inQoS2[a.PacketID]
	code := packet.Success
	if in == nil {
		code = packet.PacketIdentifierNotFound
	} else {
		if c.store != nil {
			if err := c.store.Delete(RecordInbound, a.PacketID); err != nil {
				c.mu.Unlock()
				return fmt.Errorf("tern: store release: %w", err)
			}
		}
		delete(c.inQoS2, a.PacketID)
		if !in.recd {
			// PUBREL before our PUBREC breaks the protocol ([MQTT-4.3.3]). Complete the
			// exchange as asked, but the message stays in the window until the
			// application acknowledges it; flushAcksLocked then takes it out, once, and
			// sends no PUBREC.
			in.early = true
		} else {
			// Nothing refers to the record any more: its handles are all acknowledged
			// and it has left the acknowledgement queue.
			*in = inbound{}
			inboundPool.Put(in)
		}
	}
	c.mu.Unlock()
	comp := packet.Ack{Version: cn.ver, Kind: packet.PUBCOMP, PacketID: a.PacketID, ReasonCode: code}
	var b [8]byte
	return cn.w.sendUrgent(comp.AppendTo(b[:0]))
}
