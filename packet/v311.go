package packet

import (
	"errors"
	"fmt"
	"slices"
)

// Protocol levels a connection can speak. Every packet type whose layout differs between the
// two has a Version field: 0 or Version5 selects MQTT 5, Version311 selects MQTT 3.1.1
// (protocol level 4). AppendTo, Len and Validate follow it, and so does Decode, which reads
// the field as its input (DecodeVersion sets it) and keeps it. Connect is the exception on
// decoding: its level is on the wire, so Decode sets Version from the packet.
//
// What 3.1.1 has no room for (properties, reason codes in acknowledgements, subscription
// options beyond the QoS, a DISCONNECT body, AUTH) is refused by Validate with ErrNotInV311,
// never dropped: AppendTo trusts its input and leaves it out.
const (
	Version311 byte = 4
	Version5   byte = 5
)

// ErrNotInV311 is returned by Validate at protocol level 4 for a field MQTT 3.1.1 cannot
// carry; the error names the field.
var ErrNotInV311 = errors.New("packet: not available in MQTT 3.1.1")

func notInV311(what string) error { return fmt.Errorf("%w: %s", ErrNotInV311, what) }

// Return codes of a 3.1.1 CONNACK (§3.2.2.3 of 3.1.1) and the MQTT 5 reason codes Tern reads
// them as, so one refusal type serves both levels. Index: the 3.1.1 code.
var v311ConnackCodes = [...]ReasonCode{
	0: Success,
	1: UnsupportedProtocolVersion, // unacceptable protocol version
	2: ClientIdentifierNotValid,   // identifier rejected
	3: ServerUnavailable,
	4: BadUserNameOrPassword,
	5: NotAuthorized,
}

// v311ReturnCode is the 3.1.1 CONNACK return code for c; a code 3.1.1 has no equivalent for
// becomes 3, server unavailable.
func v311ReturnCode(c ReasonCode) byte {
	for i, rc := range v311ConnackCodes {
		if rc == c {
			return byte(i)
		}
	}
	return 3
}

var (
	errConnPassword = malformed("MQTT-3.1.2-22", "password flag without user name flag (3.1.1)")
	errAckLen311    = malformed("", "acknowledgement body is not exactly a packet identifier (3.1.1)")
	errConnackLen   = malformed("", "CONNACK body is not two bytes (3.1.1)")
	errConnackRC    = malformed("", "reserved CONNACK return code (3.1.1)")
	errConnack311SP = protocolErr("MQTT-3.2.2-4", "session present set with a non-zero return code (3.1.1)")
	errPub311Topic  = protocolErr("MQTT-4.7.3-1", "empty topic name (3.1.1)")
	errSub311Empty  = protocolErr("MQTT-3.8.3-3", "SUBSCRIBE without a topic filter (3.1.1)")
	errSub311Opts   = malformed("MQTT-3.8.3-4", "reserved bits or QoS 3 in a subscription (3.1.1)")
	errSuback311RC  = malformed("MQTT-3.9.3-2", "reserved SUBACK return code (3.1.1)")
	errDisc311Body  = malformed("", "DISCONNECT with a body (3.1.1)")
	errAuth311      = malformed("", "reserved packet type 15 (3.1.1)")
)

// remaining311 is the Remaining Length of a level-4 CONNECT.
func (c *Connect) remaining311() int {
	rl := 10 + 2 + len(c.ClientID)
	if c.Will != nil {
		rl += 2 + len(c.Will.Topic) + 2 + len(c.Will.Payload)
	}
	if c.hasUser311() {
		rl += 2 + len(c.Username)
	}
	if c.Password != nil {
		rl += 2 + len(c.Password)
	}
	return rl
}

// hasUser311 reports whether a level-4 CONNECT carries a user name: 3.1.1 allows a password
// only after one ([MQTT-3.1.2-22]), so a password alone goes with an empty user name.
func (c *Connect) hasUser311() bool { return c.Username != "" || c.Password != nil }

func (c *Connect) append311(dst []byte) []byte {
	rl := c.remaining311()
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, CONNECT, 0, rl)
	// Bit 1 of the flags is Clean Session in 3.1.1, Clean Start in 5: the same bit.
	f := c.connectFlags()
	if c.hasUser311() {
		f |= 0x80
	}
	dst = append(dst, 0, 4, 'M', 'Q', 'T', 'T', Version311, f)
	dst = appendU16(dst, c.KeepAlive)
	dst = appendString(dst, c.ClientID)
	if w := c.Will; w != nil {
		dst = appendString(dst, w.Topic)
		dst = appendBinary(dst, w.Payload)
	}
	if c.hasUser311() {
		dst = appendString(dst, c.Username)
	}
	if c.Password != nil {
		dst = appendBinary(dst, c.Password)
	}
	return dst
}

func (c *Connect) validate311() error {
	switch {
	case c.SessionExpiry != 0:
		return notInV311("session expiry")
	case c.ReceiveMaximum != 0:
		return notInV311("receive maximum")
	case c.MaximumPacketSize != 0:
		return notInV311("maximum packet size")
	case c.TopicAliasMaximum != 0:
		return notInV311("topic alias maximum")
	case c.RequestResponseInfo:
		return notInV311("request response information")
	case c.RequestProblemInfo != nil:
		return notInV311("request problem information")
	case c.AuthMethod != "" || c.AuthData != nil:
		return notInV311("enhanced authentication")
	case len(c.UserProperties) > 0:
		return notInV311("user properties")
	case c.ClientID == "" && !c.CleanStart:
		// [MQTT-3.1.3-7] (3.1.1) an empty client identifier needs Clean Session 1.
		return notInV311("empty client identifier without clean session")
	}
	if w := c.Will; w != nil {
		if w.DelayInterval != 0 || w.PayloadFormat != 0 || w.MessageExpiry != 0 ||
			w.ContentType != "" || w.ResponseTopic != "" || w.CorrelationData != nil ||
			len(w.UserProperties) > 0 {
			return notInV311("will properties")
		}
	}
	return nil
}

func (c *Connack) append311(dst []byte) []byte {
	return append(dst, byte(CONNACK)<<4, 2, boolByte(c.SessionPresent), v311ReturnCode(c.ReasonCode))
}

func (c *Connack) decode311(body []byte) error {
	if len(body) != 2 {
		return errConnackLen
	}
	if body[0]&0xFE != 0 {
		return errAckFlags
	}
	if int(body[1]) >= len(v311ConnackCodes) {
		return errConnackRC
	}
	c.SessionPresent = body[0]&1 != 0
	c.ReasonCode = v311ConnackCodes[body[1]]
	if c.SessionPresent && body[1] != 0 {
		return errConnack311SP
	}
	return nil
}

func (p *Publish) validate311() error {
	if p.Topic == "" {
		return ErrEmptyTopic
	}
	switch {
	case p.PayloadFormat != 0:
		return notInV311("payload format indicator")
	case p.MessageExpiry != 0:
		return notInV311("message expiry")
	case p.TopicAlias != 0:
		return notInV311("topic alias")
	case p.ResponseTopic != "":
		return notInV311("response topic")
	case p.CorrelationData != nil:
		return notInV311("correlation data")
	case p.ContentType != "":
		return notInV311("content type")
	case len(p.SubscriptionIDs) > 0:
		return notInV311("subscription identifiers")
	case len(p.UserProperties) > 0:
		return notInV311("user properties")
	}
	return nil
}

// HasProperties reports whether p carries any property, that is, whether it can go to a
// 3.1.1 peer as it is.
func (p *Publish) HasProperties() bool {
	return p.PayloadFormat != 0 || p.MessageExpiry != 0 || p.TopicAlias != 0 ||
		p.ResponseTopic != "" || p.CorrelationData != nil || p.ContentType != "" ||
		len(p.SubscriptionIDs) > 0 || len(p.UserProperties) > 0
}

func (a *Ack) validate311() error {
	if a.ReasonCode != Success {
		return notInV311("acknowledgement reason code")
	}
	if a.ReasonString != "" || len(a.UserProperties) > 0 {
		return notInV311("acknowledgement properties")
	}
	return nil
}

func (s *Subscribe) remaining311() int {
	rl := 2
	for i := range s.Subscriptions {
		rl += 2 + len(s.Subscriptions[i].Filter) + 1
	}
	return rl
}

func (s *Subscribe) append311(dst []byte) []byte {
	rl := s.remaining311()
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, SUBSCRIBE, SUBSCRIBE.fixedFlags(), rl)
	dst = appendU16(dst, s.PacketID)
	for i := range s.Subscriptions {
		dst = appendString(dst, s.Subscriptions[i].Filter)
		dst = append(dst, s.Subscriptions[i].QoS) // the other option bits are reserved in 3.1.1
	}
	return dst
}

func (s *Subscribe) validate311() error {
	if s.SubscriptionID != 0 {
		return notInV311("subscription identifier")
	}
	if len(s.UserProperties) > 0 {
		return notInV311("user properties")
	}
	for i := range s.Subscriptions {
		sub := &s.Subscriptions[i]
		switch {
		case sub.NoLocal:
			return notInV311("no local")
		case sub.RetainAsPublished:
			return notInV311("retain as published")
		case sub.RetainHandling != RetainSendOnSubscribe:
			return notInV311("retain handling")
		}
	}
	return nil
}

func (s *Subscribe) decode311(d *decoder) {
	for d.err == nil && d.remaining() > 0 {
		sub := Subscription{Filter: d.str()}
		o := d.u8()
		// [MQTT-3.8.3-4] (3.1.1) reserved bits set or QoS 3: malformed.
		if d.err == nil && (o&0xFC != 0 || o == 3) {
			d.fail(errSub311Opts)
		}
		sub.QoS = o & 3
		s.Subscriptions = append(s.Subscriptions, sub)
	}
}

// appendListAck311 encodes a level-4 SUBACK (codes) or UNSUBACK (codes nil).
func appendListAck311(dst []byte, t Type, id uint16, codes []ReasonCode) []byte {
	rl := 2 + len(codes)
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, t, 0, rl)
	dst = appendU16(dst, id)
	for _, c := range codes {
		dst = append(dst, byte(c))
	}
	return dst
}

func decodeSuback311(body []byte, s *Suback) error {
	d := decoder{b: body}
	if s.PacketID = d.u16(); d.err == nil && s.PacketID == 0 {
		return errListAckID0
	}
	if d.err != nil {
		return d.err
	}
	if d.remaining() == 0 {
		return errListAckEmpty
	}
	rest := d.rest()
	s.ReasonCodes = make([]ReasonCode, len(rest))
	for i, c := range rest {
		// [MQTT-3.9.3-2] (3.1.1) only 0x00, 0x01, 0x02 and 0x80; the values mean the same
		// in MQTT 5.
		if c > 2 && c != 0x80 {
			return errSuback311RC
		}
		s.ReasonCodes[i] = ReasonCode(c)
	}
	return nil
}

func decodeAck311(body []byte) (uint16, error) {
	if len(body) != 2 {
		return 0, errAckLen311
	}
	id := uint16(body[0])<<8 | uint16(body[1])
	if id == 0 {
		return 0, errAckID0
	}
	return id, nil
}

func (x *Disconnect) validate311() error {
	if x.ReasonCode != NormalDisconnection {
		return notInV311("disconnect reason code")
	}
	if x.SessionExpiry != nil || x.ReasonString != "" || x.ServerReference != "" ||
		len(x.UserProperties) > 0 {
		return notInV311("disconnect properties")
	}
	return nil
}

// DecodeVersion decodes a frame into a new packet of the frame's type at the given protocol
// level (Version311 or Version5; 0 means Version5). A CONNECT is read at the level it names
// itself. At level 4 the reserved type 15 (AUTH) is malformed.
func DecodeVersion(f *Frame, version byte) (Packet, error) {
	if version != Version311 {
		return Decode(f)
	}
	flags := f.Flags()
	switch t := f.Type(); t {
	case CONNACK:
		p := &Connack{Version: version}
		return p, p.Decode(flags, f.Body)
	case PUBLISH:
		p := &Publish{Version: version}
		return p, p.Decode(flags, f.Body)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		p := &Ack{Version: version}
		return p, p.Decode(t, flags, f.Body)
	case SUBSCRIBE:
		p := &Subscribe{Version: version}
		return p, p.Decode(flags, f.Body)
	case SUBACK:
		p := &Suback{Version: version}
		return p, p.Decode(flags, f.Body)
	case UNSUBSCRIBE:
		p := &Unsubscribe{Version: version}
		return p, p.Decode(flags, f.Body)
	case UNSUBACK:
		p := &Unsuback{Version: version}
		return p, p.Decode(flags, f.Body)
	case DISCONNECT:
		p := &Disconnect{Version: version}
		return p, p.Decode(flags, f.Body)
	case AUTH:
		return nil, errAuth311
	}
	return Decode(f)
}

// DecodeBytesVersion is DecodeBytes at the given protocol level (see DecodeVersion).
func DecodeBytesVersion(b []byte, version byte) (Packet, error) {
	f, err := splitFrame(b)
	if err != nil {
		return nil, err
	}
	return DecodeVersion(&f, version)
}
