package tern

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"syscall"

	"github.com/ternmq/tern/packet"
)

// Protocol selects the MQTT version a client speaks (WithProtocol).
type Protocol byte

const (
	// MQTT5 speaks MQTT 5 only. The default.
	MQTT5 Protocol = iota
	// MQTT311 speaks MQTT 3.1.1 (protocol level 4) only.
	MQTT311
	// MQTT5Fallback311 tries MQTT 5 and falls back to 3.1.1 when the broker refuses level 5
	// (see WithProtocol); once fallen back, the client speaks 3.1.1 for the rest of its life.
	MQTT5Fallback311
)

// DefaultMQTT311Window is the outbound window of a 3.1.1 connection unless
// WithMQTT311Window says otherwise: 20, the in-flight limit of Mosquitto's default
// configuration (max_inflight_messages).
const DefaultMQTT311Window = 20

// ErrNotInV311 is returned, before anything is sent, for a feature MQTT 3.1.1 does not have
// (properties, topic aliases, subscription identifiers, no-local, retain-as-published, retain
// handling, enhanced authentication, reason codes and properties in DISCONNECT, ...) on a
// client that speaks 3.1.1. The error names the feature; it also matches
// packet.ErrNotInV311 when the packet layer found it. For a message with a property it also
// matches ErrInvalidMessage (a QueuePublisher sets such a message aside).
var ErrNotInV311 = errors.New("tern: not available in MQTT 3.1.1")

// WithProtocol chooses the protocol version. Default: MQTT5.
//
// MQTT311 speaks 3.1.1 to every broker. What 3.1.1 lacks is refused with ErrNotInV311: by New
// for options (an Authenticator, CONNECT user properties, request response information,
// will properties), and by Publish, Subscribe and DisconnectWith for their own fields; nothing
// is dropped silently. The client's own MQTT 5 settings that a 3.1.1 broker cannot be told
// (Receive Maximum, Maximum Packet Size, topic alias maximum) are simply not sent: the client
// still enforces its maximum packet size on what it reads. Session expiry maps to the Clean
// Session flag: an expiry of 0 sends Clean Session 1 on every connection (the session ends
// with it); an expiry above 0 sends Clean Session 0 on every connection, even the first with
// WithCleanStart(true), because 3.1.1 cannot start a new session that outlives its
// connection. How long the broker keeps that session is then its own setting. The outbound
// window comes from WithMQTT311Window (3.1.1 has no Receive Maximum).
//
// MQTT5Fallback311 sends a level-5 CONNECT first. It falls back to 3.1.1, at once and on the
// same broker, when the broker answers CONNACK 0x84 (unsupported protocol version), including
// the 3.1.1 form of that answer (return code 1, which reads 0x84), or when it closes the
// connection (end of stream or reset) before any CONNACK on two level-5 attempts in a row
// (one close may be a broker restarting or shedding load). After a successful 3.1.1
// connection the client stays on 3.1.1 (Info().Version says 4). Until then, messages and
// subscriptions are checked against 3.1.1 when they are written: one that uses a 5-only
// feature fails with ErrNotInV311 without being sent. Options that 3.1.1 cannot carry
// (see MQTT311) make the fallback fail with ErrNotInV311 instead of connecting without them.
func WithProtocol(p Protocol) Option {
	return func(c *config) error {
		if p > MQTT5Fallback311 {
			return fmt.Errorf("%w: unknown protocol %d", ErrInvalidOption, p)
		}
		c.protocol = p
		return nil
	}
}

// WithMQTT311Window sets how many QoS 1 and 2 publishes may await acknowledgement at once on
// a 3.1.1 connection, where the broker cannot say how many it takes. Default: 20
// (DefaultMQTT311Window), Mosquitto's default in-flight limit: a broker past its own limit
// queues or, on some brokers, drops the connection, while a window that is too small only
// costs throughput. Raise it for a broker configured for more.
func WithMQTT311Window(n uint16) Option {
	return func(c *config) error {
		if n == 0 {
			return fmt.Errorf("%w: the 3.1.1 window must be at least 1", ErrInvalidOption)
		}
		c.window311 = n
		return nil
	}
}

// connectFeatures311 reports the first configured CONNECT feature 3.1.1 cannot carry.
func (c *config) connectFeatures311() error {
	switch {
	case c.auth != nil:
		return fmt.Errorf("%w: enhanced authentication", ErrNotInV311)
	case len(c.connectProps) > 0:
		return fmt.Errorf("%w: CONNECT user properties", ErrNotInV311)
	case c.requestResp:
		return fmt.Errorf("%w: request response information", ErrNotInV311)
	}
	if w := c.will; w != nil && (w.DelayInterval != 0 || w.PayloadFormat != 0 ||
		w.MessageExpiry != 0 || w.ContentType != "" || w.ResponseTopic != "" ||
		w.CorrelationData != nil || len(w.UserProperties) > 0) {
		return fmt.Errorf("%w: will properties", ErrNotInV311)
	}
	return nil
}

// speaks311 reports whether the client speaks 3.1.1: configured so, or fallen back.
func (c *Client) speaks311() bool { return c.v311.Load() }

// versionToTry is the protocol level of the next CONNECT.
func (c *Client) versionToTry() byte {
	if c.speaks311() {
		return packet.Version311
	}
	return packet.Version5
}

// dialConn opens a connection to broker at the client's protocol level (see dialConnAt),
// falling back from 5 to 3.1.1 under MQTT5Fallback311 when the broker refuses level 5.
func (c *Client) dialConn(ctx context.Context, broker *url.URL, clean, redirected bool) (*conn, error) {
	v := c.versionToTry()
	cn, err := c.dialConnAt(ctx, broker, clean, redirected, v)
	if err == nil && v == packet.Version5 {
		c.v5ok.Store(true)
	}
	if err == nil || v != packet.Version5 || c.cfg.protocol != MQTT5Fallback311 ||
		!refusedLevel5(err, c.v5ok.Load()) || ctx.Err() != nil {
		return cn, err
	}
	if ferr := c.cfg.connectFeatures311(); ferr != nil {
		return nil, fmt.Errorf("%w; no fallback to 3.1.1: %w", err, ferr)
	}
	if rc := (*ReasonCodeError)(nil); !errors.As(err, &rc) {
		// A close before CONNACK says less than 0x84 does: a broker restarting or shedding
		// load closes too, and falling back is for the client's lifetime. Ask at level 5
		// once more first; only a second close in a row means the broker refuses it.
		c.log.Info("tern: broker closed before CONNACK; asking for MQTT 5 once more", "broker", redact(broker), "err", err)
		cn, err = c.dialConnAt(ctx, broker, clean, redirected, packet.Version5)
		if err == nil {
			c.v5ok.Store(true)
		}
		if err == nil || !refusedLevel5(err, c.v5ok.Load()) || ctx.Err() != nil {
			return cn, err
		}
	}
	c.log.Info("tern: broker refused MQTT 5; trying 3.1.1", "broker", redact(broker), "err", err)
	cn, err2 := c.dialConnAt(ctx, broker, clean, redirected, packet.Version311)
	if err2 != nil {
		return nil, fmt.Errorf("%w; fallback to 3.1.1: %w", err, err2)
	}
	c.v311.Store(true)
	return cn, nil
}

// refusedLevel5 reports whether a failed level-5 handshake means the broker does not speak
// MQTT 5: CONNACK 0x84 (also how a 3.1.1 CONNACK with return code 1 reads), or the broker
// closed the connection, cleanly or by reset, before any CONNACK. Timeouts do not count: a
// slow broker is not a 3.1.1 broker. Neither does a close once a level-5 connection has
// succeeded (v5ok): a broker that took MQTT 5 and now closes at once is going down.
func refusedLevel5(err error, v5ok bool) bool {
	var rc *ReasonCodeError
	if errors.As(err, &rc) {
		return rc.Code == packet.UnsupportedProtocolVersion
	}
	if v5ok || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	// io.EOF as well as io.ErrUnexpectedEOF: a transport may report the end of its stream
	// wrapped with detail (the WebSocket transport keeps the close status).
	return errors.Is(err, errNoConnack) && (errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// errNoConnack marks a handshake that failed reading CONNACK at the transport level.
var errNoConnack = errors.New("no CONNACK")

// check311Sub refuses subscription options 3.1.1 does not have.
func check311Sub(s *Subscription) error {
	if len(s.cfg.props) > 0 {
		return fmt.Errorf("%w: subscription user properties", ErrNotInV311)
	}
	if s.cfg.subID != 0 {
		return fmt.Errorf("%w: subscription identifier", ErrNotInV311)
	}
	for _, f := range s.filters {
		switch {
		case f.NoLocal:
			return fmt.Errorf("%w: no local (%q)", ErrNotInV311, f.Topic)
		case f.RetainAsPublished:
			return fmt.Errorf("%w: retain as published (%q)", ErrNotInV311, f.Topic)
		case f.RetainHandling != packet.RetainSendOnSubscribe:
			return fmt.Errorf("%w: retain handling (%q)", ErrNotInV311, f.Topic)
		}
	}
	return nil
}

// fitRequest311 makes a SUBSCRIBE or UNSUBSCRIBE a level-4 packet and checks that nothing is
// lost on the way: a subscription identifier of the client's own choosing (for routing) is
// dropped, anything else 3.1.1 cannot carry fails with ErrNotInV311.
func fitRequest311(p packet.Packet) error {
	var err error
	switch p := p.(type) {
	case *packet.Subscribe:
		p.Version, p.SubscriptionID = packet.Version311, 0
		err = p.Validate()
	case *packet.Unsubscribe:
		p.Version = packet.Version311
		err = p.Validate()
	}
	if errors.Is(err, packet.ErrNotInV311) {
		return fmt.Errorf("%w: %w", ErrNotInV311, err)
	}
	return nil
}

// check311Publish refuses a message that uses a property, which 3.1.1 cannot carry. The error
// matches ErrInvalidMessage too: a client on 3.1.1 stays on it, so the message can never be
// sent by this client, and a QueuePublisher sets it aside instead of retrying it forever.
func check311Publish(p *packet.Publish) error {
	if !p.HasProperties() {
		return nil
	}
	q := *p
	q.Version, q.QoS, q.PacketID = packet.Version311, 0, 0
	err := q.ValidateFields()
	if err == nil {
		err = packet.ErrNotInV311
	}
	return fmt.Errorf("%w (%w): %w", ErrNotInV311, ErrInvalidMessage, err)
}

// mayFallBack311 reports whether the client speaks 3.1.1 or may yet speak it: configured
// so, fallen back, or under MQTT5Fallback311 before any MQTT 5 connection succeeded.
func (c *Client) mayFallBack311() bool {
	switch c.cfg.protocol {
	case MQTT311:
		return true
	case MQTT5Fallback311:
		return c.speaks311() || !c.v5ok.Load()
	}
	return false
}

// writeOut311Locked writes a stored publish to a 3.1.1 connection. The stored bytes are the
// MQTT 5 encoding (so the store and a resend do not depend on the connection); they are
// re-encoded at level 4 here. A message with properties (restored from an MQTT 5 session, or
// accepted under MQTT5Fallback311 before the broker turned out to speak 3.1.1) is refused
// with ErrNotInV311 and never sent. Caller holds c.mu.
func (c *Client) writeOut311Locked(cn *conn, om *outMsg, dup bool) error {
	b := om.buf.B
	var p packet.Publish
	if err := p.Decode(b[0]&0x0F, b[1+vbiBytes(len(b)):]); err != nil {
		return fmt.Errorf("tern: stored publish: %w", err)
	}
	if err := check311Publish(&p); err != nil {
		return err
	}
	p.Version, p.Dup = packet.Version311, dup
	cn.w.mu.Lock()
	if cn.w.err == nil {
		cn.w.buf = p.AppendTo(cn.w.buf)
	}
	cn.w.commit()
	om.sent = true
	c.countSent(dup)
	return nil
}
