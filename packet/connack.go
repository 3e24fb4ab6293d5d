package packet

import "slices"

// Connack is a CONNACK packet (MQTT 5 §3.2). Optional properties whose absence means
// something other than zero are pointers; the accessor methods return the value in force.
type Connack struct {
	Version        byte // 0 or Version5: MQTT 5; Version311: MQTT 3.1.1 (see DecodeVersion)
	SessionPresent bool
	ReasonCode     ReasonCode

	SessionExpiry        *uint32 // nil: the client's own value stands
	ReceiveMaximum       uint16  // 0: absent, meaning 65535
	MaximumQoS           *byte   // nil: QoS 2
	RetainAvailable      *bool   // nil: available
	MaximumPacketSize    uint32  // 0: absent, meaning no limit
	AssignedClientID     string
	TopicAliasMaximum    uint16
	ReasonString         string
	UserProperties       []UserProperty
	WildcardSubAvailable *bool   // nil: available
	SubIDAvailable       *bool   // nil: available
	SharedSubAvailable   *bool   // nil: available
	ServerKeepAlive      *uint16 // nil: the client's keepalive stands
	ResponseInfo         string
	ServerReference      string
	AuthMethod           string
	AuthData             []byte
}

// Type returns CONNACK.
func (*Connack) Type() Type { return CONNACK }

// ReceiveMax returns the Receive Maximum in force: the property, or 65535 when absent.
func (c *Connack) ReceiveMax() uint16 {
	if c.ReceiveMaximum == 0 {
		return 65535
	}
	return c.ReceiveMaximum
}

// MaxQoS returns the highest QoS the server accepts.
func (c *Connack) MaxQoS() byte { return deref(c.MaximumQoS, 2) }

// Retain reports whether the server accepts retained messages.
func (c *Connack) Retain() bool { return deref(c.RetainAvailable, true) }

// Wildcards reports whether the server accepts wildcard subscriptions.
func (c *Connack) Wildcards() bool { return deref(c.WildcardSubAvailable, true) }

// SubIDs reports whether the server accepts subscription identifiers.
func (c *Connack) SubIDs() bool { return deref(c.SubIDAvailable, true) }

// Shared reports whether the server accepts shared subscriptions.
func (c *Connack) Shared() bool { return deref(c.SharedSubAvailable, true) }

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func (c *Connack) propsLen() int {
	n := strPropLen(c.AssignedClientID) + strPropLen(c.ReasonString) +
		userPropsLen(c.UserProperties) + strPropLen(c.ResponseInfo) +
		strPropLen(c.ServerReference) + strPropLen(c.AuthMethod) + binPropLen(c.AuthData)
	if c.SessionExpiry != nil {
		n += 5
	}
	if c.ReceiveMaximum != 0 {
		n += 3
	}
	if c.MaximumQoS != nil {
		n += 2
	}
	if c.RetainAvailable != nil {
		n += 2
	}
	if c.MaximumPacketSize != 0 {
		n += 5
	}
	if c.TopicAliasMaximum != 0 {
		n += 3
	}
	for _, b := range [...]*bool{c.WildcardSubAvailable, c.SubIDAvailable, c.SharedSubAvailable} {
		if b != nil {
			n += 2
		}
	}
	if c.ServerKeepAlive != nil {
		n += 3
	}
	return n
}

// Len returns the size of the encoded packet in bytes.
func (c *Connack) Len() int {
	if c.Version == Version311 {
		return 4
	}
	pl := c.propsLen()
	return wholeLen(2 + VBILen(pl) + pl)
}

// AppendTo appends the encoded packet to dst.
func (c *Connack) AppendTo(dst []byte) []byte {
	if c.Version == Version311 {
		return c.append311(dst)
	}
	pl := c.propsLen()
	rl := 2 + VBILen(pl) + pl
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, CONNACK, 0, rl)
	dst = append(dst, boolByte(c.SessionPresent), byte(c.ReasonCode))
	dst = AppendVBI(dst, pl)
	if c.SessionExpiry != nil {
		dst = appendU32Prop(dst, propSessionExpiry, *c.SessionExpiry)
	}
	if c.ReceiveMaximum != 0 {
		dst = appendU16Prop(dst, propReceiveMaximum, c.ReceiveMaximum)
	}
	if c.MaximumQoS != nil {
		dst = append(dst, propMaximumQoS, *c.MaximumQoS)
	}
	if c.RetainAvailable != nil {
		dst = append(dst, propRetainAvailable, boolByte(*c.RetainAvailable))
	}
	if c.MaximumPacketSize != 0 {
		dst = appendU32Prop(dst, propMaximumPacketSize, c.MaximumPacketSize)
	}
	dst = appendStrProp(dst, propAssignedClientID, c.AssignedClientID)
	if c.TopicAliasMaximum != 0 {
		dst = appendU16Prop(dst, propTopicAliasMaximum, c.TopicAliasMaximum)
	}
	dst = appendStrProp(dst, propReasonString, c.ReasonString)
	dst = appendUserProps(dst, c.UserProperties)
	if c.WildcardSubAvailable != nil {
		dst = append(dst, propWildcardSubAvailable, boolByte(*c.WildcardSubAvailable))
	}
	if c.SubIDAvailable != nil {
		dst = append(dst, propSubIDAvailable, boolByte(*c.SubIDAvailable))
	}
	if c.SharedSubAvailable != nil {
		dst = append(dst, propSharedSubAvailable, boolByte(*c.SharedSubAvailable))
	}
	if c.ServerKeepAlive != nil {
		dst = appendU16Prop(dst, propServerKeepAlive, *c.ServerKeepAlive)
	}
	dst = appendStrProp(dst, propResponseInfo, c.ResponseInfo)
	dst = appendStrProp(dst, propServerReference, c.ServerReference)
	dst = appendStrProp(dst, propAuthMethod, c.AuthMethod)
	return appendBinProp(dst, propAuthData, c.AuthData)
}

var (
	errAckFlags   = malformed("MQTT-3.2.2-1", "reserved connect acknowledge flags set")
	errAckPresent = protocolErr("MQTT-3.2.2-6", "session present set with a failure reason code")
	errAckMaxQoS  = protocolErr("", "maximum QoS neither 0 nor 1")
	// [MQTT-3.2.2-8] The server must use one of the CONNACK reason codes. Any other byte
	// (0x01-0x7F in particular, which IsError would take for success) cannot be read.
	errAckCode = malformed("MQTT-3.2.2-8", "reason code not valid in CONNACK")
)

// connackCodes marks the reason codes of the CONNACK table (MQTT 5 §3.2.2.2), one bit per
// code.
var connackCodes = func() (set [4]uint64) {
	for _, c := range []ReasonCode{Success, UnspecifiedError, MalformedPacket, ProtocolError,
		ImplementationSpecificError, UnsupportedProtocolVersion, ClientIdentifierNotValid,
		BadUserNameOrPassword, NotAuthorized, ServerUnavailable, ServerBusy, Banned,
		BadAuthenticationMethod, TopicNameInvalid, PacketTooLarge, QuotaExceeded,
		PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer,
		ServerMoved, ConnectionRateExceeded} {
		set[c>>6] |= 1 << (c & 63)
	}
	return set
}()

func validConnackCode(c ReasonCode) bool { return connackCodes[c>>6]&(1<<(c&63)) != 0 }

// Decode fills c from a CONNACK packet body at the level in c.Version, which it keeps. At
// level 4 the return code (0 to 5) is read as the MQTT 5 reason code of the same meaning (see
// v311ConnackCodes). Strings and byte slices are copied.
func (c *Connack) Decode(flags byte, body []byte) error {
	if flags != 0 {
		return errFlags
	}
	*c = Connack{Version: c.Version}
	if c.Version == Version311 {
		return c.decode311(body)
	}
	if len(body) == 2 && body[0] == 0 && body[1] == 1 {
		// A server that knows only 3.1.1 answers a level-5 CONNECT with return code 1,
		// unacceptable protocol version ([MQTT-3.1.2-2] of 3.1.1), in a 3.1.1 CONNACK. 0x01
		// is no CONNACK reason code in MQTT 5, so the two bytes cannot mean anything else.
		c.ReasonCode = UnsupportedProtocolVersion
		return nil
	}
	d := decoder{b: body}
	f := d.u8()
	c.ReasonCode = ReasonCode(d.u8())
	if d.err != nil {
		return d.err
	}
	if f&0xFE != 0 {
		return errAckFlags
	}
	if !validConnackCode(c.ReasonCode) {
		return errAckCode
	}
	c.SessionPresent = f&1 != 0
	if c.SessionPresent && c.ReasonCode.IsError() {
		return errAckPresent
	}
	// A refusal may come with no property block at all from some servers; accept that.
	if d.remaining() == 0 {
		return nil
	}
	c.decodeProps(&d)
	d.done()
	return d.result()
}

func (c *Connack) decodeProps(d *decoder) {
	pr := d.beginProps(allowedConnack)
	for id := pr.next(d); id != 0; id = pr.next(d) {
		switch id {
		case propSessionExpiry:
			c.SessionExpiry = Ptr(d.u32())
		case propReceiveMaximum:
			if c.ReceiveMaximum = d.u16(); d.err == nil && c.ReceiveMaximum == 0 {
				d.fail(errConnZero)
			}
		case propMaximumQoS:
			q := d.u8()
			if q > 1 {
				d.fail(errAckMaxQoS)
			}
			c.MaximumQoS = &q
		case propRetainAvailable:
			c.RetainAvailable = Ptr(d.boolProp(""))
		case propMaximumPacketSize:
			if c.MaximumPacketSize = d.u32(); d.err == nil && c.MaximumPacketSize == 0 {
				d.fail(errConnZero)
			}
		case propAssignedClientID:
			c.AssignedClientID = d.str()
		case propTopicAliasMaximum:
			c.TopicAliasMaximum = d.u16()
		case propReasonString:
			c.ReasonString = d.str()
		case propUserProperty:
			c.UserProperties = d.userProp(c.UserProperties)
		case propWildcardSubAvailable:
			c.WildcardSubAvailable = Ptr(d.boolProp(""))
		case propSubIDAvailable:
			c.SubIDAvailable = Ptr(d.boolProp(""))
		case propSharedSubAvailable:
			c.SharedSubAvailable = Ptr(d.boolProp(""))
		case propServerKeepAlive:
			c.ServerKeepAlive = Ptr(d.u16())
		case propResponseInfo:
			c.ResponseInfo = d.str()
		case propServerReference:
			c.ServerReference = d.str()
		case propAuthMethod:
			c.AuthMethod = d.str()
		case propAuthData:
			c.AuthData = d.bytes()
		}
	}
}
