package packet

// Property identifiers (MQTT 5 §2.2.2.2).
const (
	propPayloadFormat        = 0x01
	propMessageExpiry        = 0x02
	propContentType          = 0x03
	propResponseTopic        = 0x08
	propCorrelationData      = 0x09
	propSubscriptionID       = 0x0B
	propSessionExpiry        = 0x11
	propAssignedClientID     = 0x12
	propServerKeepAlive      = 0x13
	propAuthMethod           = 0x15
	propAuthData             = 0x16
	propRequestProblemInfo   = 0x17
	propWillDelay            = 0x18
	propRequestResponseInfo  = 0x19
	propResponseInfo         = 0x1A
	propServerReference      = 0x1C
	propReasonString         = 0x1F
	propReceiveMaximum       = 0x21
	propTopicAliasMaximum    = 0x22
	propTopicAlias           = 0x23
	propMaximumQoS           = 0x24
	propRetainAvailable      = 0x25
	propUserProperty         = 0x26
	propMaximumPacketSize    = 0x27
	propWildcardSubAvailable = 0x28
	propSubIDAvailable       = 0x29
	propSharedSubAvailable   = 0x2A
)

func bit(ids ...byte) uint64 {
	var m uint64
	for _, id := range ids {
		m |= 1 << id
	}
	return m
}

// The properties each packet may carry. A property outside its packet's set makes the packet
// malformed (MQTT 5 §2.2.2.2).
var (
	allowedConnect = bit(propSessionExpiry, propAuthMethod, propAuthData, propRequestProblemInfo,
		propRequestResponseInfo, propReceiveMaximum, propTopicAliasMaximum, propUserProperty,
		propMaximumPacketSize)
	allowedWill = bit(propPayloadFormat, propMessageExpiry, propContentType, propResponseTopic,
		propCorrelationData, propWillDelay, propUserProperty)
	allowedConnack = bit(propSessionExpiry, propAssignedClientID, propServerKeepAlive,
		propAuthMethod, propAuthData, propResponseInfo, propServerReference, propReasonString,
		propReceiveMaximum, propTopicAliasMaximum, propMaximumQoS, propRetainAvailable,
		propUserProperty, propMaximumPacketSize, propWildcardSubAvailable, propSubIDAvailable,
		propSharedSubAvailable)
	allowedPublish = bit(propPayloadFormat, propMessageExpiry, propContentType, propResponseTopic,
		propCorrelationData, propSubscriptionID, propTopicAlias, propUserProperty)
	allowedAck         = bit(propReasonString, propUserProperty)
	allowedSubscribe   = bit(propSubscriptionID, propUserProperty)
	allowedUnsubscribe = bit(propUserProperty)
	allowedDisconnect  = bit(propSessionExpiry, propServerReference, propReasonString, propUserProperty)
	allowedAuth        = bit(propAuthMethod, propAuthData, propReasonString, propUserProperty)
)

// repeatable are the properties that may appear more than once in every packet that allows
// them. PUBLISH also repeats the subscription identifier (one per matching subscription); its
// decoder adds that to its own propReader, since SUBSCRIBE allows only one.
var repeatable = bit(propUserProperty)

// UserProperty is one name/value pair of the User Property property. Order is preserved and a
// name may repeat.
type UserProperty struct {
	Key   string
	Value string
}

// propReader walks a property block.
type propReader struct {
	end     int
	allowed uint64
	repeat  uint64
	seen    uint64
}

// begin reads the Property Length and prepares to walk the block.
func (d *decoder) beginProps(allowed uint64) propReader {
	n := d.vbi()
	if n > d.remaining() {
		d.fail(errPropLen)
	}
	return propReader{end: d.off + n, allowed: allowed, repeat: repeatable}
}

// next returns the next property identifier, or 0 when the block is done or broken.
func (p *propReader) next(d *decoder) byte {
	if d.err != nil || d.off >= p.end {
		if d.err == nil && d.off > p.end {
			d.fail(errPropLen)
		}
		return 0
	}
	// Identifiers are variable byte integers, but every defined one fits in one byte.
	id := d.vbi()
	if id <= 0 || id > 63 || p.allowed&(1<<id) == 0 {
		d.fail(errPropID)
		return 0
	}
	m := uint64(1) << id
	if p.seen&m != 0 && p.repeat&m == 0 {
		d.fail(errPropDup)
		return 0
	}
	p.seen |= m
	return byte(id)
}

// userProp reads one user property pair and appends it.
func (d *decoder) userProp(dst []UserProperty) []UserProperty {
	k := d.str()
	v := d.str()
	if d.err != nil {
		return dst
	}
	return append(dst, UserProperty{Key: k, Value: v})
}

// boolProp reads a one-byte property that must be 0 or 1.
func (d *decoder) boolProp(rule string) bool {
	v := d.u8()
	if v > 1 {
		d.fail(protocolErr(rule, "boolean property is neither 0 nor 1"))
	}
	return v == 1
}

// Property sizes for encoding.

func userPropsLen(ups []UserProperty) int {
	n := 0
	for i := range ups {
		n += 1 + 2 + len(ups[i].Key) + 2 + len(ups[i].Value)
	}
	return n
}

func appendUserProps(dst []byte, ups []UserProperty) []byte {
	for i := range ups {
		dst = append(dst, propUserProperty)
		dst = appendString(dst, ups[i].Key)
		dst = appendString(dst, ups[i].Value)
	}
	return dst
}

func strPropLen(s string) int {
	if s == "" {
		return 0
	}
	return 3 + len(s)
}

func appendStrProp(dst []byte, id byte, s string) []byte {
	if s == "" {
		return dst
	}
	return appendString(append(dst, id), s)
}

func binPropLen(b []byte) int {
	if b == nil {
		return 0
	}
	return 3 + len(b)
}

func appendBinProp(dst []byte, id byte, b []byte) []byte {
	if b == nil {
		return dst
	}
	return appendBinary(append(dst, id), b)
}

func appendU32Prop(dst []byte, id byte, v uint32) []byte {
	return appendU32(append(dst, id), v)
}

func appendU16Prop(dst []byte, id byte, v uint16) []byte {
	return appendU16(append(dst, id), v)
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// validateUserProps checks user property names and values before sending.
func validateUserProps(ups []UserProperty) error {
	for i := range ups {
		if err := ValidString(ups[i].Key); err != nil {
			return err
		}
		if err := ValidString(ups[i].Value); err != nil {
			return err
		}
	}
	return nil
}

// validateStrings checks each string with ValidString.
func validateStrings(ss ...string) error {
	for _, s := range ss {
		if err := ValidString(s); err != nil {
			return err
		}
	}
	return nil
}

// validateBinary checks binary fields fit a two-byte length.
func validateBinary(bs ...[]byte) error {
	for _, b := range bs {
		if len(b) > 0xFFFF {
			return ErrFieldTooLong
		}
	}
	return nil
}

// Ptr returns a pointer to v, for the optional properties held as pointers.
func Ptr[T any](v T) *T { return &v }
