package packet

import "slices"

// ProtocolVersion is the protocol level of MQTT 5.
const ProtocolVersion = 5

// Connect is a CONNECT packet (MQTT 5 §3.1).
type Connect struct {
	Version    byte // 0 or Version5: MQTT 5; Version311: MQTT 3.1.1 (set by Decode)
	ClientID   string
	CleanStart bool
	KeepAlive  uint16 // seconds; 0 turns keepalive off
	Username   string // empty: no user name
	Password   []byte // nil: no password
	Will       *Will  // nil: no will message

	// Properties. A zero value means absent.
	SessionExpiry       uint32
	ReceiveMaximum      uint16 // absent means 65535
	MaximumPacketSize   uint32 // absent means no limit beyond the protocol's
	TopicAliasMaximum   uint16
	RequestResponseInfo bool
	RequestProblemInfo  *bool // absent means true
	AuthMethod          string
	AuthData            []byte
	UserProperties      []UserProperty
}

// Will is the will message carried in CONNECT (MQTT 5 §3.1.3.2).
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool

	// Will properties. A zero value means absent.
	DelayInterval   uint32 // seconds the server waits before publishing the will
	PayloadFormat   byte
	MessageExpiry   uint32
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []UserProperty
}

// Type returns CONNECT.
func (*Connect) Type() Type { return CONNECT }

func (c *Connect) propsLen() int {
	n := strPropLen(c.AuthMethod) + binPropLen(c.AuthData) + userPropsLen(c.UserProperties)
	if c.SessionExpiry != 0 {
		n += 5
	}
	if c.ReceiveMaximum != 0 {
		n += 3
	}
	if c.MaximumPacketSize != 0 {
		n += 5
	}
	if c.TopicAliasMaximum != 0 {
		n += 3
	}
	if c.RequestResponseInfo {
		n += 2
	}
	if c.RequestProblemInfo != nil {
		n += 2
	}
	return n
}

func (w *Will) propsLen() int {
	n := strPropLen(w.ContentType) + strPropLen(w.ResponseTopic) +
		binPropLen(w.CorrelationData) + userPropsLen(w.UserProperties)
	if w.DelayInterval != 0 {
		n += 5
	}
	if w.PayloadFormat != 0 {
		n += 2
	}
	if w.MessageExpiry != 0 {
		n += 5
	}
	return n
}

func (c *Connect) lengths() (pl, wpl, rl int) {
	pl = c.propsLen()
	rl = 10 + VBILen(pl) + pl + 2 + len(c.ClientID)
	if c.Will != nil {
		wpl = c.Will.propsLen()
		rl += VBILen(wpl) + wpl + 2 + len(c.Will.Topic) + 2 + len(c.Will.Payload)
	}
	if c.Username != "" {
		rl += 2 + len(c.Username)
	}
	if c.Password != nil {
		rl += 2 + len(c.Password)
	}
	return pl, wpl, rl
}

// Len returns the size of the encoded packet in bytes.
func (c *Connect) Len() int {
	if c.Version == Version311 {
		return wholeLen(c.remaining311())
	}
	_, _, rl := c.lengths()
	return wholeLen(rl)
}

func (c *Connect) connectFlags() byte {
	var f byte
	if c.CleanStart {
		f |= 0x02
	}
	if w := c.Will; w != nil {
		f |= 0x04 | w.QoS<<3
		if w.Retain {
			f |= 0x20
		}
	}
	if c.Password != nil {
		f |= 0x40
	}
	if c.Username != "" {
		f |= 0x80
	}
	return f
}

// AppendTo appends the encoded packet to dst.
func (c *Connect) AppendTo(dst []byte) []byte {
	if c.Version == Version311 {
		return c.append311(dst)
	}
	pl, wpl, rl := c.lengths()
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, CONNECT, 0, rl)
	dst = append(dst, 0, 4, 'M', 'Q', 'T', 'T', ProtocolVersion, c.connectFlags())
	dst = appendU16(dst, c.KeepAlive)
	dst = AppendVBI(dst, pl)
	if c.SessionExpiry != 0 {
		dst = appendU32Prop(dst, propSessionExpiry, c.SessionExpiry)
	}
	if c.ReceiveMaximum != 0 {
		dst = appendU16Prop(dst, propReceiveMaximum, c.ReceiveMaximum)
	}
	if c.MaximumPacketSize != 0 {
		dst = appendU32Prop(dst, propMaximumPacketSize, c.MaximumPacketSize)
	}
	if c.TopicAliasMaximum != 0 {
		dst = appendU16Prop(dst, propTopicAliasMaximum, c.TopicAliasMaximum)
	}
	if c.RequestResponseInfo {
		dst = append(dst, propRequestResponseInfo, 1)
	}
	if c.RequestProblemInfo != nil {
		dst = append(dst, propRequestProblemInfo, boolByte(*c.RequestProblemInfo))
	}
	dst = appendStrProp(dst, propAuthMethod, c.AuthMethod)
	dst = appendBinProp(dst, propAuthData, c.AuthData)
	dst = appendUserProps(dst, c.UserProperties)
	dst = appendString(dst, c.ClientID)
	if w := c.Will; w != nil {
		dst = AppendVBI(dst, wpl)
		if w.DelayInterval != 0 {
			dst = appendU32Prop(dst, propWillDelay, w.DelayInterval)
		}
		if w.PayloadFormat != 0 {
			dst = append(dst, propPayloadFormat, w.PayloadFormat)
		}
		if w.MessageExpiry != 0 {
			dst = appendU32Prop(dst, propMessageExpiry, w.MessageExpiry)
		}
		dst = appendStrProp(dst, propContentType, w.ContentType)
		dst = appendStrProp(dst, propResponseTopic, w.ResponseTopic)
		dst = appendBinProp(dst, propCorrelationData, w.CorrelationData)
		dst = appendUserProps(dst, w.UserProperties)
		dst = appendString(dst, w.Topic)
		dst = appendBinary(dst, w.Payload)
	}
	if c.Username != "" {
		dst = appendString(dst, c.Username)
	}
	if c.Password != nil {
		dst = appendBinary(dst, c.Password)
	}
	return dst
}

// Validate checks the packet as a sender must before it goes on the wire.
func (c *Connect) Validate() error {
	if err := validateStrings(c.ClientID, c.Username, c.AuthMethod); err != nil {
		return err
	}
	if err := validateBinary(c.Password, c.AuthData); err != nil {
		return err
	}
	if c.AuthData != nil && c.AuthMethod == "" {
		// Authentication Data means nothing without an Authentication Method (§3.1.2.11.10).
		return ErrInvalidProperty
	}
	if err := validateUserProps(c.UserProperties); err != nil {
		return err
	}
	if c.Version == Version311 {
		if err := c.validate311(); err != nil {
			return err
		}
	}
	if w := c.Will; w != nil {
		if err := ValidateTopicName(w.Topic); err != nil {
			return err
		}
		if w.QoS > 2 {
			return ErrInvalidQoS
		}
		if w.PayloadFormat > 1 {
			return ErrInvalidProperty
		}
		if w.ResponseTopic != "" {
			if err := ValidateTopicName(w.ResponseTopic); err != nil {
				return err
			}
		}
		if err := validateStrings(w.ContentType); err != nil {
			return err
		}
		if err := validateBinary(w.Payload, w.CorrelationData); err != nil {
			return err
		}
		if err := validateUserProps(w.UserProperties); err != nil {
			return err
		}
	}
	return nil
}

var (
	errConnProto    = &Error{Code: UnsupportedProtocolVersion, Rule: "MQTT-3.1.2-1", Detail: "protocol name is not MQTT"}
	errConnVersion  = &Error{Code: UnsupportedProtocolVersion, Rule: "MQTT-3.1.2-2", Detail: "protocol version is neither 4 nor 5"}
	errConnReserved = malformed("MQTT-3.1.2-3", "reserved connect flag set")
	errConnWillQoS  = malformed("MQTT-3.1.2-12", "will QoS 3")
	errConnWillQoS0 = malformed("MQTT-3.1.2-11", "will QoS set without a will")
	errConnWillRet0 = malformed("MQTT-3.1.2-13", "will retain set without a will")
	errConnZero     = protocolErr("", "receive maximum or maximum packet size of 0")
	errAuthNoMethod = protocolErr("", "authentication data without a method")
)

// Decode fills c from a CONNECT packet body at level 5 or 4 (3.1.1), setting Version to
// Version311 for the latter. Strings and byte slices are copied.
func (c *Connect) Decode(flags byte, body []byte) error {
	if flags != 0 {
		return errFlags
	}
	*c = Connect{}
	d := decoder{b: body}
	if name := d.binary(); d.err == nil && string(name) != "MQTT" {
		return errConnProto
	}
	v := d.u8()
	if d.err == nil && v != ProtocolVersion && v != Version311 {
		return errConnVersion
	}
	if v == Version311 {
		c.Version = Version311
	}
	f := d.u8()
	c.KeepAlive = d.u16()
	if d.err != nil {
		return d.err
	}
	if f&0x01 != 0 {
		return errConnReserved
	}
	c.CleanStart = f&0x02 != 0
	willQoS := (f >> 3) & 3
	if f&0x04 == 0 && willQoS != 0 {
		return errConnWillQoS0
	}
	if f&0x04 == 0 && f&0x20 != 0 {
		return errConnWillRet0
	}
	if willQoS == 3 {
		return errConnWillQoS
	}
	if c.Version == Version311 && f&0xC0 == 0x40 {
		// [MQTT-3.1.2-22] (3.1.1) a password needs a user name.
		return errConnPassword
	}
	if c.Version != Version311 {
		c.decodeProps(&d)
	}
	c.ClientID = d.str()
	if f&0x04 != 0 {
		w := &Will{QoS: willQoS, Retain: f&0x20 != 0}
		if c.Version != Version311 {
			w.decodeProps(&d)
		}
		w.Topic = d.str()
		w.Payload = d.bytes()
		if w.Payload == nil {
			w.Payload = []byte{}
		}
		c.Will = w
	}
	if f&0x80 != 0 {
		c.Username = d.str()
	}
	if f&0x40 != 0 {
		c.Password = d.bytes()
		if c.Password == nil {
			c.Password = []byte{}
		}
	}
	d.done()
	return d.result()
}

func (c *Connect) decodeProps(d *decoder) {
	pr := d.beginProps(allowedConnect)
	for id := pr.next(d); id != 0; id = pr.next(d) {
		switch id {
		case propSessionExpiry:
			c.SessionExpiry = d.u32()
		case propReceiveMaximum:
			if c.ReceiveMaximum = d.u16(); d.err == nil && c.ReceiveMaximum == 0 {
				d.fail(errConnZero)
			}
		case propMaximumPacketSize:
			if c.MaximumPacketSize = d.u32(); d.err == nil && c.MaximumPacketSize == 0 {
				d.fail(errConnZero)
			}
		case propTopicAliasMaximum:
			c.TopicAliasMaximum = d.u16()
		case propRequestResponseInfo:
			c.RequestResponseInfo = d.boolProp("")
		case propRequestProblemInfo:
			c.RequestProblemInfo = Ptr(d.boolProp(""))
		case propAuthMethod:
			c.AuthMethod = d.str()
		case propAuthData:
			c.AuthData = d.bytes()
		case propUserProperty:
			c.UserProperties = d.userProp(c.UserProperties)
		}
	}
	if d.err == nil && c.AuthData != nil && c.AuthMethod == "" {
		d.fail(errAuthNoMethod)
	}
}

func (w *Will) decodeProps(d *decoder) {
	pr := d.beginProps(allowedWill)
	for id := pr.next(d); id != 0; id = pr.next(d) {
		switch id {
		case propWillDelay:
			w.DelayInterval = d.u32()
		case propPayloadFormat:
			if w.PayloadFormat = d.u8(); w.PayloadFormat > 1 {
				d.fail(errPubFormat)
			}
		case propMessageExpiry:
			w.MessageExpiry = d.u32()
		case propContentType:
			w.ContentType = d.str()
		case propResponseTopic:
			w.ResponseTopic = d.str()
		case propCorrelationData:
			w.CorrelationData = d.bytes()
		case propUserProperty:
			w.UserProperties = d.userProp(w.UserProperties)
		}
	}
}
