package packet

import "slices"

// Disconnect is a DISCONNECT packet (MQTT 5 §3.14).
type Disconnect struct {
	Version         byte // 0 or Version5: MQTT 5; Version311: MQTT 3.1.1, no body
	ReasonCode      ReasonCode
	SessionExpiry   *uint32 // nil: unchanged
	ReasonString    string
	ServerReference string
	UserProperties  []UserProperty
}

// Type returns DISCONNECT.
func (*Disconnect) Type() Type { return DISCONNECT }

func (x *Disconnect) lengths() (pl, rl int) {
	if x.Version == Version311 {
		return 0, 0
	}
	pl = strPropLen(x.ReasonString) + strPropLen(x.ServerReference) + userPropsLen(x.UserProperties)
	if x.SessionExpiry != nil {
		pl += 5
	}
	return pl, reasonTailLen(x.ReasonCode, pl)
}

// Len returns the size of the encoded packet in bytes.
func (x *Disconnect) Len() int {
	_, rl := x.lengths()
	return wholeLen(rl)
}

// AppendTo appends the encoded packet to dst in its shortest valid form.
func (x *Disconnect) AppendTo(dst []byte) []byte {
	pl, rl := x.lengths()
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, DISCONNECT, 0, rl)
	dst, props := appendReasonTail(dst, x.ReasonCode, pl, rl)
	if !props {
		return dst
	}
	if x.SessionExpiry != nil {
		dst = appendU32Prop(dst, propSessionExpiry, *x.SessionExpiry)
	}
	dst = appendStrProp(dst, propReasonString, x.ReasonString)
	dst = appendStrProp(dst, propServerReference, x.ServerReference)
	return appendUserProps(dst, x.UserProperties)
}

// disconnectCodes marks the reason codes of the DISCONNECT table (MQTT 5 §3.14.2.1), one bit
// per code. The table is the same for both directions here: the codec does not know who sent
// the packet.
var disconnectCodes = func() (set [4]uint64) {
	for _, c := range []ReasonCode{NormalDisconnection, DisconnectWithWillMessage,
		UnspecifiedError, MalformedPacket, ProtocolError, ImplementationSpecificError,
		NotAuthorized, ServerBusy, ServerShuttingDown, KeepAliveTimeout, SessionTakenOver,
		TopicFilterInvalid, TopicNameInvalid, ReceiveMaximumExceeded, TopicAliasInvalid,
		PacketTooLarge, MessageRateTooHigh, QuotaExceeded, AdministrativeAction,
		PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer,
		ServerMoved, SharedSubscriptionsNotSupported, ConnectionRateExceeded,
		MaximumConnectTime, SubscriptionIdentifiersNotSupported,
		WildcardSubscriptionsNotSupported} {
		set[c>>6] |= 1 << (c & 63)
	}
	return set
}()

// validDisconnectCode reports whether c is one of the reason codes a DISCONNECT may carry.
func validDisconnectCode(c ReasonCode) bool { return disconnectCodes[c>>6]&(1<<(c&63)) != 0 }

// [MQTT-3.14.2-1] The sender of DISCONNECT must use one of the DISCONNECT Reason Codes; any
// other byte there is a packet the receiver cannot interpret, so it is malformed.
var errDisconnectCode = malformed("MQTT-3.14.2-1", "reason code not valid in DISCONNECT")

// Validate checks the packet as a sender must before it goes on the wire.
func (x *Disconnect) Validate() error {
	if x.Version == Version311 {
		return x.validate311()
	}
	if !validDisconnectCode(x.ReasonCode) {
		return ErrInvalidProperty
	}
	if err := validateStrings(x.ReasonString, x.ServerReference); err != nil {
		return err
	}
	return validateUserProps(x.UserProperties)
}

// Decode fills x from a DISCONNECT packet body at the level in x.Version, which it keeps.
// Strings are copied.
func (x *Disconnect) Decode(flags byte, body []byte) error {
	if flags != 0 {
		return errFlags
	}
	*x = Disconnect{Version: x.Version}
	if len(body) == 0 {
		return nil
	}
	if x.Version == Version311 {
		return errDisc311Body
	}
	d := decoder{b: body}
	x.ReasonCode = ReasonCode(d.u8())
	if !validDisconnectCode(x.ReasonCode) {
		return errDisconnectCode
	}
	if d.remaining() == 0 {
		return nil
	}
	pr := d.beginProps(allowedDisconnect)
	for id := pr.next(&d); id != 0; id = pr.next(&d) {
		switch id {
		case propSessionExpiry:
			x.SessionExpiry = Ptr(d.u32())
		case propReasonString:
			x.ReasonString = d.str()
		case propServerReference:
			x.ServerReference = d.str()
		case propUserProperty:
			x.UserProperties = d.userProp(x.UserProperties)
		}
	}
	d.done()
	return d.result()
}

// Auth is an AUTH packet (MQTT 5 §3.15), used for enhanced authentication.
type Auth struct {
	ReasonCode     ReasonCode // Success, ContinueAuthentication or ReAuthenticate
	AuthMethod     string
	AuthData       []byte
	ReasonString   string
	UserProperties []UserProperty
}

// Type returns AUTH.
func (*Auth) Type() Type { return AUTH }

func (a *Auth) lengths() (pl, rl int) {
	pl = strPropLen(a.AuthMethod) + binPropLen(a.AuthData) + strPropLen(a.ReasonString) +
		userPropsLen(a.UserProperties)
	if pl > 0 || a.ReasonCode != Success {
		rl = 1 + VBILen(pl) + pl
	}
	return pl, rl
}

// Len returns the size of the encoded packet in bytes.
func (a *Auth) Len() int {
	_, rl := a.lengths()
	return wholeLen(rl)
}

// AppendTo appends the encoded packet to dst.
func (a *Auth) AppendTo(dst []byte) []byte {
	pl, rl := a.lengths()
	dst = slices.Grow(dst, wholeLen(rl))
	dst = appendHeader(dst, AUTH, 0, rl)
	if rl == 0 {
		return dst
	}
	dst = append(dst, byte(a.ReasonCode))
	dst = AppendVBI(dst, pl)
	dst = appendStrProp(dst, propAuthMethod, a.AuthMethod)
	dst = appendBinProp(dst, propAuthData, a.AuthData)
	dst = appendStrProp(dst, propReasonString, a.ReasonString)
	return appendUserProps(dst, a.UserProperties)
}

// Validate checks the packet as a sender must before it goes on the wire.
func (a *Auth) Validate() error {
	switch a.ReasonCode {
	case Success, ContinueAuthentication, ReAuthenticate:
	default:
		return ErrInvalidProperty
	}
	if err := validateStrings(a.AuthMethod, a.ReasonString); err != nil {
		return err
	}
	if err := validateBinary(a.AuthData); err != nil {
		return err
	}
	return validateUserProps(a.UserProperties)
}

var errAuthCode = protocolErr("", "AUTH reason code is not 0x00, 0x18 or 0x19")

// Decode fills a from an AUTH packet body. Strings and byte slices are copied.
func (a *Auth) Decode(flags byte, body []byte) error {
	if flags != 0 {
		return errFlags
	}
	*a = Auth{}
	if len(body) == 0 {
		return nil
	}
	d := decoder{b: body}
	a.ReasonCode = ReasonCode(d.u8())
	switch a.ReasonCode {
	case Success, ContinueAuthentication, ReAuthenticate:
	default:
		return errAuthCode
	}
	if d.remaining() == 0 {
		return nil
	}
	pr := d.beginProps(allowedAuth)
	for id := pr.next(&d); id != 0; id = pr.next(&d) {
		switch id {
		case propAuthMethod:
			a.AuthMethod = d.str()
		case propAuthData:
			a.AuthData = d.bytes()
		case propReasonString:
			a.ReasonString = d.str()
		case propUserProperty:
			a.UserProperties = d.userProp(a.UserProperties)
		}
	}
	d.done()
	return d.result()
}

// Pingreq is a PINGREQ packet (MQTT 5 §3.12).
type Pingreq struct{}

// Type returns PINGREQ.
func (*Pingreq) Type() Type { return PINGREQ }

// Len returns 2.
func (*Pingreq) Len() int { return 2 }

// AppendTo appends the two bytes of PINGREQ.
func (*Pingreq) AppendTo(dst []byte) []byte { return append(dst, byte(PINGREQ)<<4, 0) }

// Pingresp is a PINGRESP packet (MQTT 5 §3.13).
type Pingresp struct{}

// Type returns PINGRESP.
func (*Pingresp) Type() Type { return PINGRESP }

// Len returns 2.
func (*Pingresp) Len() int { return 2 }

// AppendTo appends the two bytes of PINGRESP.
func (*Pingresp) AppendTo(dst []byte) []byte { return append(dst, byte(PINGRESP)<<4, 0) }

var errPingBody = malformed("", "PINGREQ or PINGRESP with a body")
