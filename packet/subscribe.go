package packet

import "slices"

// Retain handling values for a subscription (MQTT 5 §3.8.3.1).
const (
	RetainSendOnSubscribe       = 0 // send retained messages at subscribe time
	RetainSendIfNewSubscription = 1 // only when the subscription did not exist yet
	RetainDoNotSend             = 2 // never send retained messages for this subscription
)

// Subscription is one topic filter of a SUBSCRIBE packet with its options.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool // do not receive messages published by this same client
	RetainAsPublished bool // keep the RETAIN flag as the publisher set it
	RetainHandling    byte // RetainSendOnSubscribe, RetainSendIfNewSubscription or RetainDoNotSend
}

func (s *Subscription) options() byte {
	o := s.QoS | s.RetainHandling<<4
	if s.NoLocal {
		o |= 0x04
	}
	if s.RetainAsPublished {
		o |= 0x08
	}
	return o
}

// Validate checks the subscription as a sender must.
func (s *Subscription) Validate() error {
	if err := ValidateTopicFilter(s.Filter); err != nil {
		return err
	}
	if s.QoS > 2 {
		return ErrInvalidQoS
	}
	if s.RetainHandling > 2 {
		return ErrInvalidProperty
	}
	if _, _, shared := SplitShared(s.Filter); shared && s.NoLocal {
		// [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
		return ErrInvalidShare
	}
	return nil
}

// Subscribe is a SUBSCRIBE packet (MQTT 5 §3.8).
type Subscribe struct {
	Version        byte // 0 or Version5: MQTT 5; Version311: MQTT 3.1.1, QoS only
	PacketID       uint16
	SubscriptionID uint32 // 0: none
	UserProperties []UserProperty
	Subscriptions  []Subscription
}

// Type returns SUBSCRIBE.
func (*Subscribe) Type() Type { return SUBSCRIBE }

func (s *Subscribe) lengths() (pl, rl int) {
	pl = userPropsLen(s.UserProperties)
	if s.SubscriptionID != 0 {
		pl += 1 + VBILen(int(s.SubscriptionID))
	}
	rl = 2 + VBILen(pl) + pl
	for i := range s.Subscriptions {
		rl += 2 + len(s.Subscriptions[i].Filter) + 1
	}
	return pl, rl
}

// Len returns the size of the encoded packet in bytes.
func (s *Subscribe) Len() int {
	if s.Version == Version311 {
		return wholeLen(s.remaining311())
	}
	_, rl := s.lengths()
	return wholeLen(rl)
}

// AppendTo appends the encoded packet to dst.
func (s *Subscribe) AppendTo(dst []byte) []byte {
	if s.Version == Version311 {
		return s.append311(dst)
	}
	pl, rl := s.lengths()
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, SUBSCRIBE, SUBSCRIBE.fixedFlags(), rl)
	dst = appendU16(dst, s.PacketID)
	dst = AppendVBI(dst, pl)
	if s.SubscriptionID != 0 {
		dst = AppendVBI(append(dst, propSubscriptionID), int(s.SubscriptionID))
	}
	dst = appendUserProps(dst, s.UserProperties)
	for i := range s.Subscriptions {
		dst = appendString(dst, s.Subscriptions[i].Filter)
		dst = append(dst, s.Subscriptions[i].options())
	}
	return dst
}

// Validate checks the packet as a sender must before it goes on the wire.
func (s *Subscribe) Validate() error {
	if s.PacketID == 0 {
		return ErrMissingPacketID
	}
	if len(s.Subscriptions) == 0 {
		return ErrEmptySubscription
	}
	if s.SubscriptionID > MaxVBI {
		return ErrInvalidProperty
	}
	for i := range s.Subscriptions {
		if err := s.Subscriptions[i].Validate(); err != nil {
			return err
		}
	}
	if s.Version == Version311 {
		if err := s.validate311(); err != nil {
			return err
		}
	}
	return validateUserProps(s.UserProperties)
}

var (
	errSubEmpty    = protocolErr("MQTT-3.8.3-2", "SUBSCRIBE without a topic filter")
	errSubReserved = malformed("MQTT-3.8.3-5", "reserved subscription option bits set")
	errSubQoS      = protocolErr("", "subscription QoS 3")
	errSubRetain   = protocolErr("", "retain handling 3")
	errSubShared   = protocolErr("MQTT-3.8.3-4", "no local on a shared subscription")
	errUnsubEmpty  = protocolErr("MQTT-3.10.3-2", "UNSUBSCRIBE without a topic filter")
	errRequestID0  = protocolErr("MQTT-2.2.1-3", "packet identifier 0")
	errListAckID0  = protocolErr("MQTT-2.2.1-6", "packet identifier 0")
)

// Decode fills s from a SUBSCRIBE packet body at the level in s.Version, which it keeps.
// Strings are copied.
func (s *Subscribe) Decode(flags byte, body []byte) error {
	if flags != SUBSCRIBE.fixedFlags() {
		return errFlags
	}
	*s = Subscribe{Version: s.Version}
	d := decoder{b: body}
	if s.PacketID = d.u16(); d.err == nil && s.PacketID == 0 {
		return errRequestID0
	}
	if s.Version == Version311 {
		s.decode311(&d)
		if d.err == nil && len(s.Subscriptions) == 0 {
			return errSub311Empty
		}
		return d.result()
	}
	pr := d.beginProps(allowedSubscribe)
	for id := pr.next(&d); id != 0; id = pr.next(&d) {
		switch id {
		case propSubscriptionID:
			if s.SubscriptionID = uint32(d.vbi()); d.err == nil && s.SubscriptionID == 0 {
				d.fail(errSubID0)
			}
		case propUserProperty:
			s.UserProperties = d.userProp(s.UserProperties)
		}
	}
	for d.err == nil && d.remaining() > 0 {
		sub := Subscription{Filter: d.str()}
		o := d.u8()
		switch {
		case d.err != nil:
		case o&0xC0 != 0:
			d.fail(errSubReserved)
		case o&3 == 3:
			d.fail(errSubQoS)
		case (o>>4)&3 == 3:
			d.fail(errSubRetain)
		}
		sub.QoS, sub.NoLocal, sub.RetainAsPublished = o&3, o&0x04 != 0, o&0x08 != 0
		sub.RetainHandling = (o >> 4) & 3
		if _, _, shared := SplitShared(sub.Filter); shared && sub.NoLocal {
			d.fail(errSubShared)
		}
		s.Subscriptions = append(s.Subscriptions, sub)
	}
	if d.err == nil && len(s.Subscriptions) == 0 {
		return errSubEmpty
	}
	return d.result()
}

// Suback is a SUBACK packet (MQTT 5 §3.9): one reason code per requested filter, in order.
type Suback struct {
	Version        byte // 0 or Version5: MQTT 5; Version311: MQTT 3.1.1, no properties
	PacketID       uint16
	ReasonString   string
	UserProperties []UserProperty
	ReasonCodes    []ReasonCode
}

// Type returns SUBACK.
func (*Suback) Type() Type { return SUBACK }

// Len returns the size of the encoded packet in bytes.
func (s *Suback) Len() int {
	if s.Version == Version311 {
		return wholeLen(2 + len(s.ReasonCodes))
	}
	return listAckLen(s.ReasonString, s.UserProperties, s.ReasonCodes)
}

// AppendTo appends the encoded packet to dst.
func (s *Suback) AppendTo(dst []byte) []byte {
	if s.Version == Version311 {
		return appendListAck311(dst, SUBACK, s.PacketID, s.ReasonCodes)
	}
	return appendListAck(dst, SUBACK, s.PacketID, s.ReasonString, s.UserProperties, s.ReasonCodes)
}

// Decode fills s from a SUBACK packet body at the level in s.Version, which it keeps.
// Strings are copied.
func (s *Suback) Decode(flags byte, body []byte) error {
	*s = Suback{Version: s.Version}
	if s.Version == Version311 {
		if flags != 0 {
			return errFlags
		}
		return decodeSuback311(body, s)
	}
	return decodeListAck(flags, body, &s.PacketID, &s.ReasonString, &s.UserProperties, &s.ReasonCodes)
}

// Unsubscribe is an UNSUBSCRIBE packet (MQTT 5 §3.10).
type Unsubscribe struct {
	Version        byte // 0 or Version5: MQTT 5; Version311: MQTT 3.1.1, no properties
	PacketID       uint16
	UserProperties []UserProperty
	Filters        []string
}

// Type returns UNSUBSCRIBE.
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }

func (u *Unsubscribe) lengths() (pl, rl int) {
	pl = userPropsLen(u.UserProperties)
	rl = 2 + VBILen(pl) + pl
	if u.Version == Version311 {
		pl, rl = 0, 2
	}
	for _, f := range u.Filters {
		rl += 2 + len(f)
	}
	return pl, rl
}

// Len returns the size of the encoded packet in bytes.
func (u *Unsubscribe) Len() int {
	_, rl := u.lengths()
	return wholeLen(rl)
}

// AppendTo appends the encoded packet to dst.
func (u *Unsubscribe) AppendTo(dst []byte) []byte {
	pl, rl := u.lengths()
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, UNSUBSCRIBE, UNSUBSCRIBE.fixedFlags(), rl)
	dst = appendU16(dst, u.PacketID)
	if u.Version != Version311 {
		dst = AppendVBI(dst, pl)
		dst = appendUserProps(dst, u.UserProperties)
	}
	for _, f := range u.Filters {
		dst = appendString(dst, f)
	}
	return dst
}

// Validate checks the packet as a sender must before it goes on the wire.
func (u *Unsubscribe) Validate() error {
	if u.PacketID == 0 {
		return ErrMissingPacketID
	}
	if len(u.Filters) == 0 {
		return ErrEmptySubscription
	}
	for _, f := range u.Filters {
		if err := ValidateTopicFilter(f); err != nil {
			return err
		}
	}
	if u.Version == Version311 && len(u.UserProperties) > 0 {
		return notInV311("user properties")
	}
	return validateUserProps(u.UserProperties)
}

// Decode fills u from an UNSUBSCRIBE packet body at the level in u.Version, which it keeps.
// Strings are copied.
func (u *Unsubscribe) Decode(flags byte, body []byte) error {
	if flags != UNSUBSCRIBE.fixedFlags() {
		return errFlags
	}
	*u = Unsubscribe{Version: u.Version}
	d := decoder{b: body}
	if u.PacketID = d.u16(); d.err == nil && u.PacketID == 0 {
		return errRequestID0
	}
	if u.Version != Version311 {
		pr := d.beginProps(allowedUnsubscribe)
		for id := pr.next(&d); id != 0; id = pr.next(&d) {
			u.UserProperties = d.userProp(u.UserProperties)
		}
	}
	for d.err == nil && d.remaining() > 0 {
		u.Filters = append(u.Filters, d.str())
	}
	if d.err == nil && len(u.Filters) == 0 {
		return errUnsubEmpty
	}
	return d.result()
}

// Unsuback is an UNSUBACK packet (MQTT 5 §3.11): one reason code per filter, in order.
type Unsuback struct {
	Version        byte // 0 or Version5: MQTT 5; Version311: MQTT 3.1.1, identifier only
	PacketID       uint16
	ReasonString   string
	UserProperties []UserProperty
	ReasonCodes    []ReasonCode
}

// Type returns UNSUBACK.
func (*Unsuback) Type() Type { return UNSUBACK }

// Len returns the size of the encoded packet in bytes.
func (u *Unsuback) Len() int {
	if u.Version == Version311 {
		return 4
	}
	return listAckLen(u.ReasonString, u.UserProperties, u.ReasonCodes)
}

// AppendTo appends the encoded packet to dst. At level 4 it carries the identifier alone.
func (u *Unsuback) AppendTo(dst []byte) []byte {
	if u.Version == Version311 {
		return appendListAck311(dst, UNSUBACK, u.PacketID, nil)
	}
	return appendListAck(dst, UNSUBACK, u.PacketID, u.ReasonString, u.UserProperties, u.ReasonCodes)
}

// Decode fills u from an UNSUBACK packet body at the level in u.Version, which it keeps; at
// level 4 ReasonCodes stays nil (3.1.1 reports no per-filter outcome). Strings are copied.
func (u *Unsuback) Decode(flags byte, body []byte) error {
	*u = Unsuback{Version: u.Version}
	if u.Version == Version311 {
		if flags != 0 {
			return errFlags
		}
		var err error
		u.PacketID, err = decodeAck311(body)
		return err
	}
	return decodeListAck(flags, body, &u.PacketID, &u.ReasonString, &u.UserProperties, &u.ReasonCodes)
}

// SUBACK and UNSUBACK share a layout: packet identifier, properties, a list of reason codes.

func listAckLen(reason string, ups []UserProperty, codes []ReasonCode) int {
	pl := strPropLen(reason) + userPropsLen(ups)
	return wholeLen(2 + VBILen(pl) + pl + len(codes))
}

func appendListAck(dst []byte, t Type, id uint16, reason string, ups []UserProperty, codes []ReasonCode) []byte {
	pl := strPropLen(reason) + userPropsLen(ups)
	rl := 2 + VBILen(pl) + pl + len(codes)
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, t, 0, rl)
	dst = appendU16(dst, id)
	dst = AppendVBI(dst, pl)
	dst = appendStrProp(dst, propReasonString, reason)
	dst = appendUserProps(dst, ups)
	for _, c := range codes {
		dst = append(dst, byte(c))
	}
	return dst
}

var errListAckEmpty = protocolErr("", "acknowledgement without reason codes")

func decodeListAck(flags byte, body []byte, id *uint16, reason *string, ups *[]UserProperty, codes *[]ReasonCode) error {
	if flags != 0 {
		return errFlags
	}
	d := decoder{b: body}
	if *id = d.u16(); d.err == nil && *id == 0 {
		return errListAckID0
	}
	pr := d.beginProps(allowedAck)
	for p := pr.next(&d); p != 0; p = pr.next(&d) {
		switch p {
		case propReasonString:
			*reason = d.str()
		case propUserProperty:
			*ups = d.userProp(*ups)
		}
	}
	if d.err != nil {
		return d.err
	}
	if d.remaining() == 0 {
		return errListAckEmpty
	}
	rest := d.rest()
	*codes = make([]ReasonCode, len(rest))
	for i, c := range rest {
		(*codes)[i] = ReasonCode(c)
	}
	return nil
}
