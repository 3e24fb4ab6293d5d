package packet

import "slices"

// Ack is a PUBACK, PUBREC, PUBREL or PUBCOMP packet (MQTT 5 §3.4 to §3.7); Kind says which.
// The four share one layout: a packet identifier, a reason code and a property block.
type Ack struct {
	Version        byte // 0 or Version5: MQTT 5; Version311: MQTT 3.1.1, identifier only
	Kind           Type
	PacketID       uint16
	ReasonCode     ReasonCode
	ReasonString   string
	UserProperties []UserProperty
}

// Type returns the packet's kind.
func (a *Ack) Type() Type { return a.Kind }

func (a *Ack) lengths() (pl, rl int) {
	if a.Version == Version311 {
		return 0, 2
	}
	pl = strPropLen(a.ReasonString) + userPropsLen(a.UserProperties)
	return pl, 2 + reasonTailLen(a.ReasonCode, pl)
}

// Len returns the size of the encoded packet in bytes.
func (a *Ack) Len() int {
	_, rl := a.lengths()
	return wholeLen(rl)
}

// AppendTo appends the encoded packet to dst in its shortest valid form.
func (a *Ack) AppendTo(dst []byte) []byte {
	pl, rl := a.lengths()
	if pl == 0 && rl == 2 {
		// The common case on the hot path: four fixed bytes.
		return append(dst, byte(a.Kind)<<4|a.Kind.fixedFlags(), 2, byte(a.PacketID>>8), byte(a.PacketID))
	}
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, a.Kind, a.Kind.fixedFlags(), rl)
	dst = appendU16(dst, a.PacketID)
	dst, props := appendReasonTail(dst, a.ReasonCode, pl, rl-2)
	if !props {
		return dst
	}
	dst = appendStrProp(dst, propReasonString, a.ReasonString)
	return appendUserProps(dst, a.UserProperties)
}

// reasonTailLen returns the size of what ends the body of an acknowledgement or a DISCONNECT
// (MQTT 5 §3.4.2 to §3.7.2, §3.14.2), an optional reason code and property block, in its
// shortest valid form: the property length may be left out when there are no properties,
// and the reason code too when it is 0x00 (Success, Normal disconnection).
func reasonTailLen(rc ReasonCode, pl int) int {
	switch {
	case pl > 0:
		return 1 + VBILen(pl) + pl
	case rc != Success:
		return 1
	}
	return 0
}

// appendReasonTail appends as much of the reason code and the property length as tail,
// from reasonTailLen, holds; props reports whether the pl bytes of properties follow.
func appendReasonTail(dst []byte, rc ReasonCode, pl, tail int) (_ []byte, props bool) {
	if tail == 0 {
		return dst, false
	}
	dst = append(dst, byte(rc))
	if tail == 1 {
		return dst, false
	}
	return AppendVBI(dst, pl), true
}

// Validate checks the packet as a sender must before it goes on the wire.
func (a *Ack) Validate() error {
	if a.PacketID == 0 {
		return ErrMissingPacketID
	}
	if a.Version == Version311 {
		return a.validate311()
	}
	if err := ValidString(a.ReasonString); err != nil {
		return err
	}
	return validateUserProps(a.UserProperties)
}

// An acknowledgement repeats the non-zero identifier of the packet it answers.
var errAckID0 = protocolErr("MQTT-2.2.1-5", "packet identifier 0")

// Decode fills a from a packet body at the level in a.Version, which it keeps; kind is the
// type from the fixed header. Strings are copied.
func (a *Ack) Decode(kind Type, flags byte, body []byte) error {
	if flags != kind.fixedFlags() {
		return errFlags
	}
	a.Kind = kind
	a.ReasonCode = Success
	a.ReasonString = ""
	a.UserProperties = a.UserProperties[:0]
	if a.Version == Version311 {
		var err error
		a.PacketID, err = decodeAck311(body)
		return err
	}
	d := decoder{b: body}
	a.PacketID = d.u16()
	if d.err != nil {
		return d.err
	}
	if a.PacketID == 0 {
		return errAckID0
	}
	if d.remaining() == 0 {
		return nil
	}
	a.ReasonCode = ReasonCode(d.u8())
	if d.remaining() == 0 {
		return nil
	}
	pr := d.beginProps(allowedAck)
	for id := pr.next(&d); id != 0; id = pr.next(&d) {
		switch id {
		case propReasonString:
			a.ReasonString = d.str()
		case propUserProperty:
			a.UserProperties = d.userProp(a.UserProperties)
		}
	}
	d.done()
	return d.result()
}
