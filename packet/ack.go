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
	switch {
	case pl > 0:
		rl = 3 + VBILen(pl) + pl
	case a.ReasonCode != Success:
		// The property length may be left out when there are no properties (§3.4.2.2).
		rl = 3
	default:
		// Both reason code and properties may be left out on success (§3.4.2.1).
		rl = 2
	}
	return pl, rl
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
	dst = append(dst, byte(a.ReasonCode))
	if rl == 3 {
		return dst
	}
	dst = AppendVBI(dst, pl)
	dst = appendStrProp(dst, propReasonString, a.ReasonString)
	return appendUserProps(dst, a.UserProperties)
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
