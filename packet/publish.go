package packet

import (
	"slices"
	"strings"
	"unsafe"
)

// Publish is a PUBLISH packet (MQTT 5 §3.3).
//
// A Publish filled by Decode aliases the frame it was decoded from: Topic, Payload,
// CorrelationData and the strings of UserProperties point into that frame and are valid only
// until the frame is released or reused. Call Clone to keep one longer.
type Publish struct {
	Version  byte // 0 or Version5: MQTT 5; Version311: MQTT 3.1.1, no properties
	Topic    string
	Payload  []byte
	QoS      byte
	Retain   bool
	Dup      bool
	PacketID uint16 // non-zero when QoS > 0

	// Properties. A zero value means the property is absent.
	PayloadFormat   byte   // 1: the payload is UTF-8 text
	MessageExpiry   uint32 // lifetime in seconds
	TopicAlias      uint16
	ResponseTopic   string
	CorrelationData []byte
	ContentType     string
	SubscriptionIDs []uint32 // set by the server, one per matching subscription
	UserProperties  []UserProperty
}

// Type returns PUBLISH.
func (*Publish) Type() Type { return PUBLISH }

func (p *Publish) flags() byte {
	f := p.QoS << 1
	if p.Dup {
		f |= 0x08
	}
	if p.Retain {
		f |= 0x01
	}
	return f
}

func (p *Publish) propsLen() int {
	n := strPropLen(p.ContentType) + strPropLen(p.ResponseTopic) + binPropLen(p.CorrelationData)
	if p.PayloadFormat != 0 {
		n += 2
	}
	if p.MessageExpiry != 0 {
		n += 5
	}
	if p.TopicAlias != 0 {
		n += 3
	}
	for _, id := range p.SubscriptionIDs {
		n += 1 + VBILen(int(id))
	}
	if len(p.UserProperties) > 0 {
		n += userPropsLen(p.UserProperties)
	}
	return n
}

// remaining returns the Remaining Length for a property block of pl bytes.
func (p *Publish) remaining(pl int) int {
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.Version != Version311 {
		n += VBILen(pl) + pl
	}
	if p.QoS > 0 {
		n += 2
	}
	return n
}

// Len returns the size of the encoded packet in bytes.
func (p *Publish) Len() int { return wholeLen(p.remaining(p.propsLen())) }

// AppendTo appends the encoded packet to dst. It does not validate; call Validate first for
// data from outside the program.
func (p *Publish) AppendTo(dst []byte) []byte {
	dst = p.AppendHeaderTo(dst)
	return append(dst, p.Payload...)
}

// AppendHeaderTo appends everything but the payload, so a writer can send a large payload
// from its own buffer without copying it.
func (p *Publish) AppendHeaderTo(dst []byte) []byte {
	pl := p.propsLen()
	rl := p.remaining(pl)
	dst = slices.Grow(dst, wholeLen(rl)-len(p.Payload))
	dst = appendHeader(dst, PUBLISH, p.flags(), rl)
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	if p.Version == Version311 {
		return dst
	}
	dst = AppendVBI(dst, pl)
	if pl == 0 {
		return dst
	}
	if p.PayloadFormat != 0 {
		dst = append(dst, propPayloadFormat, p.PayloadFormat)
	}
	if p.MessageExpiry != 0 {
		dst = appendU32Prop(dst, propMessageExpiry, p.MessageExpiry)
	}
	if p.TopicAlias != 0 {
		dst = appendU16Prop(dst, propTopicAlias, p.TopicAlias)
	}
	dst = appendStrProp(dst, propResponseTopic, p.ResponseTopic)
	dst = appendBinProp(dst, propCorrelationData, p.CorrelationData)
	for _, id := range p.SubscriptionIDs {
		dst = AppendVBI(append(dst, propSubscriptionID), int(id))
	}
	dst = appendStrProp(dst, propContentType, p.ContentType)
	return appendUserProps(dst, p.UserProperties)
}

// Validate checks the packet as a sender must before it goes on the wire. An empty topic is
// allowed only with a topic alias.
func (p *Publish) Validate() error {
	if p.Version == Version311 && p.Topic == "" {
		return ErrEmptyTopic
	}
	if p.Topic != "" || p.TopicAlias == 0 {
		if err := ValidateTopicName(p.Topic); err != nil {
			return err
		}
	}
	return p.ValidateFields()
}

// ValidateFields is Validate without the topic name, for a caller that checked it already.
func (p *Publish) ValidateFields() error {
	if p.Version == Version311 {
		if err := p.validate311(); err != nil {
			return err
		}
	}
	if p.QoS > 2 {
		return ErrInvalidQoS
	}
	if p.QoS > 0 && p.PacketID == 0 {
		return ErrMissingPacketID
	}
	if p.PayloadFormat > 1 {
		return ErrInvalidProperty
	}
	if p.ResponseTopic != "" {
		if err := ValidateTopicName(p.ResponseTopic); err != nil {
			return err
		}
	}
	for _, id := range p.SubscriptionIDs {
		if id == 0 || id > MaxVBI {
			return ErrInvalidProperty
		}
	}
	if err := validateStrings(p.ContentType); err != nil {
		return err
	}
	if err := validateBinary(p.CorrelationData); err != nil {
		return err
	}
	if len(p.Payload) > MaxVBI {
		return ErrFieldTooLong
	}
	return validateUserProps(p.UserProperties)
}

var (
	errPubQoS3         = malformed("MQTT-3.3.1-4", "PUBLISH with both QoS bits set")
	errPubDup0         = protocolErr("MQTT-3.3.1-2", "DUP set on a QoS 0 PUBLISH")
	errPubID0          = protocolErr("MQTT-2.2.1-3", "QoS > 0 PUBLISH with packet identifier 0")
	errPubWildcard     = protocolErr("MQTT-3.3.2-2", "topic name contains a wildcard")
	errPubRespWildcard = protocolErr("MQTT-3.3.2-14", "response topic contains a wildcard")
	errPubAlias0       = protocolErr("MQTT-3.3.2-8", "topic alias 0")
	errPubNoTopic      = protocolErr("", "empty topic name without a topic alias")
	errPubFormat       = protocolErr("", "payload format indicator neither 0 nor 1")
	errSubID0          = protocolErr("", "subscription identifier 0")
)

// Decode fills p from the low nibble of the fixed header (flags) and the packet body, at the
// level in p.Version, which it keeps. The result aliases body (see Publish). Slices in p are
// reused, so decoding into the same Publish again does not allocate.
func (p *Publish) Decode(flags byte, body []byte) error {
	d := decoder{b: body, alias: true}
	qos := (flags >> 1) & 3
	if qos == 3 {
		return errPubQoS3
	}
	p.QoS = qos
	p.Dup = flags&0x08 != 0
	p.Retain = flags&0x01 != 0
	if p.Dup && qos == 0 {
		return errPubDup0
	}
	p.Topic = d.str()
	p.PacketID = 0
	if qos > 0 {
		p.PacketID = d.u16()
		if d.err == nil && p.PacketID == 0 {
			return errPubID0
		}
	}
	if p.Version == Version311 {
		p.clearProps()
		if d.err == nil && p.Topic == "" {
			// [MQTT-4.7.3-1] (3.1.1) a topic name has at least one character.
			return errPub311Topic
		}
	} else {
		p.decodeProps(&d)
	}
	if d.err != nil {
		return d.err
	}
	// §3.3.2.1: a zero-length Topic Name without a Topic Alias is a Protocol Error.
	if p.Topic == "" && p.TopicAlias == 0 {
		return errPubNoTopic
	}
	// IndexByte is vectorised; two passes beat one byte-at-a-time loop on every topic.
	if strings.IndexByte(p.Topic, '+') >= 0 || strings.IndexByte(p.Topic, '#') >= 0 {
		return errPubWildcard
	}
	// [MQTT-3.3.2-14] The Response Topic is a topic name: no wildcards.
	if p.ResponseTopic != "" && strings.ContainsAny(p.ResponseTopic, "+#") {
		return errPubRespWildcard
	}
	p.Payload = d.rest()
	return nil
}

func (p *Publish) clearProps() {
	p.PayloadFormat, p.MessageExpiry, p.TopicAlias = 0, 0, 0
	p.ResponseTopic, p.ContentType, p.CorrelationData = "", "", nil
	p.SubscriptionIDs, p.UserProperties = p.SubscriptionIDs[:0], p.UserProperties[:0]
}

func (p *Publish) decodeProps(d *decoder) {
	p.clearProps()
	pr := d.beginProps(allowedPublish)
	pr.repeat |= 1 << propSubscriptionID
	for id := pr.next(d); id != 0; id = pr.next(d) {
		switch id {
		case propPayloadFormat:
			if p.PayloadFormat = d.u8(); p.PayloadFormat > 1 {
				d.fail(errPubFormat)
			}
		case propMessageExpiry:
			p.MessageExpiry = d.u32()
		case propTopicAlias:
			if p.TopicAlias = d.u16(); d.err == nil && p.TopicAlias == 0 {
				d.fail(errPubAlias0)
			}
		case propResponseTopic:
			p.ResponseTopic = d.str()
		case propCorrelationData:
			p.CorrelationData = d.binary()
		case propContentType:
			p.ContentType = d.str()
		case propSubscriptionID:
			id := d.vbi()
			if d.err == nil && id == 0 {
				d.fail(errSubID0)
			}
			p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(id))
		case propUserProperty:
			p.UserProperties = d.userProp(p.UserProperties)
		}
	}
	if d.off != pr.end && d.err == nil {
		d.fail(errPropLen)
	}
}

// Clone returns a deep copy of p that shares no memory with the frame it was decoded from.
func (p *Publish) Clone() *Publish {
	c := *p
	n := len(p.Topic) + len(p.Payload) + len(p.ResponseTopic) + len(p.CorrelationData) +
		len(p.ContentType) + userPropsLen(p.UserProperties)
	buf := make([]byte, 0, n)
	c.Topic, buf = cloneStr(buf, p.Topic)
	c.ResponseTopic, buf = cloneStr(buf, p.ResponseTopic)
	c.ContentType, buf = cloneStr(buf, p.ContentType)
	c.Payload, buf = cloneBytes(buf, p.Payload)
	c.CorrelationData, buf = cloneBytes(buf, p.CorrelationData)
	c.SubscriptionIDs = slices.Clone(p.SubscriptionIDs)
	if p.UserProperties != nil {
		c.UserProperties = make([]UserProperty, len(p.UserProperties))
		for i, up := range p.UserProperties {
			c.UserProperties[i].Key, buf = cloneStr(buf, up.Key)
			c.UserProperties[i].Value, buf = cloneStr(buf, up.Value)
		}
	}
	return &c
}

// cloneStr copies s into spare capacity of buf (sized by the caller, so never reallocated).
func cloneStr(buf []byte, s string) (string, []byte) {
	if s == "" {
		return "", buf
	}
	start := len(buf)
	buf = append(buf, s...)
	return unsafe.String(&buf[start], len(s)), buf
}

func cloneBytes(buf, b []byte) ([]byte, []byte) {
	if b == nil {
		return nil, buf
	}
	start := len(buf)
	buf = append(buf, b...)
	return buf[start:len(buf):len(buf)], buf
}
