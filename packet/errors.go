package packet

// Error reports a packet that breaks the protocol. Code is the reason code the receiver must
// send in DISCONNECT (or CONNACK) before closing the connection: MalformedPacket when the bytes
// cannot be parsed as the specification lays them out, ProtocolError when they parse but break
// a rule, and a more specific code (PacketTooLarge, TopicAliasInvalid, ...) where the
// specification names one.
//
// Use errors.Is with ErrMalformed or ErrProtocol to tell the two main classes apart.
type Error struct {
	Code   ReasonCode
	Rule   string // the normative statement broken, e.g. "MQTT-3.3.1-4"; may be empty
	Detail string
}

func (e *Error) Error() string {
	s := "packet: " + e.Code.String()
	if e.Rule != "" {
		s += " [" + e.Rule + "]"
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is matches ErrMalformed and ErrProtocol by class, so errors.Is(err, ErrMalformed) holds for
// every malformed-packet error whatever its detail.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	if t == ErrMalformed || t == ErrProtocol {
		return e.Code == t.Code
	}
	return e == t
}

var (
	// ErrMalformed matches every error for bytes that do not parse (reason code 0x81).
	ErrMalformed = &Error{Code: MalformedPacket}
	// ErrProtocol matches every error for packets that parse but break a rule (0x82).
	ErrProtocol = &Error{Code: ProtocolError}
	// ErrTooLarge is returned by Reader when a packet exceeds its maximum size (0x95).
	ErrTooLarge = &Error{Code: PacketTooLarge, Detail: "packet exceeds the maximum packet size"}
)

func malformed(rule, detail string) *Error {
	return &Error{Code: MalformedPacket, Rule: rule, Detail: detail}
}

func protocolErr(rule, detail string) *Error {
	return &Error{Code: ProtocolError, Rule: rule, Detail: detail}
}

// Errors shared by the decoders; fixed values so the error path does not allocate.
var (
	errShort    = malformed("", "packet shorter than its fields")
	errLongVBI  = malformed("", "variable byte integer longer than 4 bytes") // §1.5.5, unnumbered
	errVBIForm  = malformed("MQTT-1.5.5-1", "variable byte integer not in its shortest form")
	errUTF8     = malformed("MQTT-1.5.4-1", "string is not well-formed UTF-8")
	errNullChar = malformed("MQTT-1.5.4-2", "string contains U+0000")
	errTrailing = malformed("", "bytes after the last field")
	errFlags    = malformed("MQTT-2.1.3-1", "reserved fixed header flags have the wrong value")
	errPropID   = malformed("", "property not allowed in this packet")
	errPropDup  = protocolErr("", "property appears more than once")
	errPropLen  = malformed("", "property length runs past the packet")
	errBadType  = malformed("", "reserved packet type 0")
)
