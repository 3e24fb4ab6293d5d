package packet

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// Level-4 (MQTT 3.1.1) vectors, written by hand from the 3.1.1 layouts.

func goldenCases311() []goldenCase {
	return []goldenCase{
		{"connect311/minimal", &Connect{Version: Version311, CleanStart: true}, wire(
			"10 0C", "00 04", txt("MQTT"),
			"04",    // protocol level 4
			"02",    // clean session
			"00 00", // keep alive
			"00 00", // empty client identifier; no property block at level 4
		)},
		{"connect311/full", &Connect{
			Version: Version311, ClientID: "c", KeepAlive: 60, Username: "u", Password: []byte("p"),
			Will: &Will{Topic: "w", Payload: []byte("x"), QoS: 1, Retain: true},
		}, wire(
			"10 19", "00 04", txt("MQTT"), "04",
			"EC", // user name, password, will retain, will QoS 1, will flag
			"00 3C",
			"00 01", txt("c"), "00 01", txt("w"), "00 01", txt("x"),
			"00 01", txt("u"), "00 01", txt("p"),
		)},
		{"connect311/password-only", &Connect{Version: Version311, CleanStart: true, Password: []byte("p")}, wire(
			"10 11", "00 04", txt("MQTT"), "04",
			"C2", // user name (empty: 3.1.1 has no password without one), password, clean session
			"00 00", "00 00", "00 00", "00 01", txt("p"),
		)},
		{"connack311/accepted", &Connack{Version: Version311, SessionPresent: true}, wire("20 02 01 00")},
		{"connack311/not-authorized", &Connack{Version: Version311, ReasonCode: NotAuthorized}, wire("20 02 00 05")},
		{"connack311/protocol-version", &Connack{Version: Version311, ReasonCode: UnsupportedProtocolVersion}, wire("20 02 00 01")},
		{"publish311/qos0", &Publish{Version: Version311, Topic: "a/b", Payload: []byte("hi")},
			wire("30 07 00 03", txt("a/b"), txt("hi"))},
		{"publish311/qos1-dup-retain", &Publish{Version: Version311, Topic: "t", QoS: 1, Dup: true,
			Retain: true, PacketID: 0x1234, Payload: []byte("z")},
			wire("3B 06 00 01", txt("t"), "12 34", txt("z"))},
		{"publish311/qos2-empty", &Publish{Version: Version311, Topic: "t", QoS: 2, PacketID: 1, Payload: []byte{}},
			wire("34 05 00 01", txt("t"), "00 01")},
		{"puback311", &Ack{Version: Version311, Kind: PUBACK, PacketID: 7}, wire("40 02 00 07")},
		{"pubrec311", &Ack{Version: Version311, Kind: PUBREC, PacketID: 7}, wire("50 02 00 07")},
		{"pubrel311", &Ack{Version: Version311, Kind: PUBREL, PacketID: 7}, wire("62 02 00 07")},
		{"pubcomp311", &Ack{Version: Version311, Kind: PUBCOMP, PacketID: 7}, wire("70 02 00 07")},
		{"subscribe311", &Subscribe{Version: Version311, PacketID: 10, Subscriptions: []Subscription{
			{Filter: "a/#", QoS: 1}, {Filter: "b", QoS: 2}}},
			wire("82 0C 00 0A", "00 03", txt("a/#"), "01", "00 01", txt("b"), "02")},
		{"suback311", &Suback{Version: Version311, PacketID: 10, ReasonCodes: []ReasonCode{GrantedQoS1, UnspecifiedError}},
			wire("90 04 00 0A 01 80")},
		{"unsubscribe311", &Unsubscribe{Version: Version311, PacketID: 11, Filters: []string{"a/#"}},
			wire("A2 07 00 0B 00 03", txt("a/#"))},
		{"unsuback311", &Unsuback{Version: Version311, PacketID: 11}, wire("B0 02 00 0B")},
		{"disconnect311", &Disconnect{Version: Version311}, wire("E0 00")},
	}
}

func TestGolden311(t *testing.T) {
	t.Parallel()
	for _, c := range goldenCases311() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := c.p.AppendTo(nil); !bytes.Equal(got, c.want) {
				t.Errorf("AppendTo = % X\nwant       % X", got, c.want)
			}
			if got := c.p.Len(); got != len(c.want) {
				t.Errorf("Len = %d, want %d", got, len(c.want))
			}
			if v, ok := c.p.(interface{ Validate() error }); ok {
				if err := v.Validate(); err != nil {
					t.Errorf("Validate: %v", err)
				}
			}
			got, err := DecodeBytesVersion(c.want, Version311)
			if err != nil {
				t.Fatalf("DecodeBytesVersion: %v", err)
			}
			if !reflect.DeepEqual(got, c.p) {
				t.Errorf("decoded\n %#v\nwant\n %#v", got, c.p)
			}
		})
	}
}

// TestConnackV311FromV5 reads the answer of a 3.1.1-only server to a level-5 CONNECT
// (return code 1, [MQTT-3.1.2-2] of 3.1.1) as 0x84, so a client can fall back.
func TestConnackV311FromV5(t *testing.T) {
	t.Parallel()
	p, err := DecodeBytes(wire("20 02 00 01"))
	if err != nil {
		t.Fatal(err)
	}
	if ca := p.(*Connack); ca.ReasonCode != UnsupportedProtocolVersion || !ca.ReasonCode.IsError() {
		t.Errorf("reason code %v, want unsupported protocol version", ca.ReasonCode)
	}
}

func invalidCases311() []invalidCase {
	const flags = "MQTT-2.1.3-1"
	return []invalidCase{
		{name: "connect311/level-3", in: wire("10 0C 00 04", txt("MQTT"), "03 02 00 00 00 00"),
			code: UnsupportedProtocolVersion, rule: "MQTT-3.1.2-2"},
		malformedCase("connect311/reserved-flag", "MQTT-3.1.2-3", wire("10 0C 00 04", txt("MQTT"), "04 03 00 00 00 00")),
		malformedCase("connect311/password-without-user", "MQTT-3.1.2-22",
			wire("10 10 00 04", txt("MQTT"), "04 40 00 00 00 01", txt("c"), "00 01", txt("p"))),
		malformedCase("connect311/will-qos3", "MQTT-3.1.2-12",
			wire("10 12 00 04", txt("MQTT"), "04 1E 00 00 00 00 00 01", txt("w"), "00 01", txt("x"))),
		malformedCase("connack311/flags", flags, wire("21 02 00 00")),
		malformedCase("connack311/long", "", wire("20 03 00 00 00")),
		malformedCase("connack311/short", "", wire("20 01 00")),
		malformedCase("connack311/reserved-ack-flags", "MQTT-3.2.2-1", wire("20 02 02 00")),
		malformedCase("connack311/return-code-6", "", wire("20 02 00 06")),
		protocolCase("connack311/session-present-refused", "MQTT-3.2.2-4", wire("20 02 01 05")),
		protocolCase("publish311/empty-topic", "MQTT-4.7.3-1", wire("30 02 00 00")),
		malformedCase("publish311/qos3", "MQTT-3.3.1-4", wire("36 03 00 01", txt("a"))),
		protocolCase("publish311/dup-qos0", "MQTT-3.3.1-2", wire("38 03 00 01", txt("a"))),
		protocolCase("publish311/packet-id-0", "MQTT-2.2.1-3", wire("32 05 00 01", txt("a"), "00 00")),
		protocolCase("publish311/wildcard", "MQTT-3.3.2-2", wire("30 03 00 01", txt("+"))),
		malformedCase("publish311/topic-nul", "MQTT-1.5.4-2", wire("30 03 00 01 00")),
		malformedCase("puback311/reason-code", "", wire("40 03 00 01 00")),
		malformedCase("pubcomp311/short", "", wire("70 01 00")),
		protocolCase("puback311/id-0", "MQTT-2.2.1-5", wire("40 02 00 00")),
		malformedCase("pubrel311/flags", flags, wire("60 02 00 01")),
		malformedCase("subscribe311/no-local", "MQTT-3.8.3-4", wire("82 06 00 01 00 01", txt("a"), "05")),
		malformedCase("subscribe311/qos3", "MQTT-3.8.3-4", wire("82 06 00 01 00 01", txt("a"), "03")),
		protocolCase("subscribe311/empty", "MQTT-3.8.3-3", wire("82 02 00 01")),
		malformedCase("suback311/code-3", "MQTT-3.9.3-2", wire("90 03 00 01 03")),
		malformedCase("suback311/code-0x87", "MQTT-3.9.3-2", wire("90 03 00 01 87")),
		protocolCase("suback311/empty", "", wire("90 02 00 01")),
		malformedCase("suback311/flags", flags, wire("92 03 00 01 00")),
		protocolCase("unsubscribe311/empty", "MQTT-3.10.3-2", wire("A2 02 00 01")),
		malformedCase("unsuback311/reason-codes", "", wire("B0 03 00 01 00")),
		malformedCase("unsuback311/flags", flags, wire("B2 02 00 01")),
		malformedCase("disconnect311/body", "", wire("E0 01 00")),
		malformedCase("auth311/reserved-type", "", wire("F0 00")),
	}
}

func TestInvalid311(t *testing.T) {
	t.Parallel()
	for _, c := range invalidCases311() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p, err := DecodeBytesVersion(c.in, Version311)
			if err == nil {
				t.Fatalf("DecodeBytesVersion(% X) = %#v, want an error", c.in, p)
			}
			expectInvalid(t, c, "DecodeBytesVersion", err)
			r := NewReader(bytes.NewReader(c.in), 16)
			f, err := r.ReadFrame()
			if err == nil {
				defer f.Release()
				_, err = DecodeVersion(&f, Version311)
			}
			expectInvalid(t, c, "Reader", err)
		})
	}
}

// TestValidate311 refuses, with ErrNotInV311, every field MQTT 3.1.1 cannot carry: the
// encoder would have to drop it.
func TestValidate311(t *testing.T) {
	t.Parallel()
	v := Version311
	ups := []UserProperty{{"k", "v"}}
	cases := []struct {
		name string
		p    interface{ Validate() error }
	}{
		{"connect/session-expiry", &Connect{Version: v, CleanStart: true, SessionExpiry: 1}},
		{"connect/receive-maximum", &Connect{Version: v, CleanStart: true, ReceiveMaximum: 1}},
		{"connect/maximum-packet-size", &Connect{Version: v, CleanStart: true, MaximumPacketSize: 1}},
		{"connect/topic-alias-maximum", &Connect{Version: v, CleanStart: true, TopicAliasMaximum: 1}},
		{"connect/request-response", &Connect{Version: v, CleanStart: true, RequestResponseInfo: true}},
		{"connect/request-problem", &Connect{Version: v, CleanStart: true, RequestProblemInfo: Ptr(false)}},
		{"connect/auth", &Connect{Version: v, CleanStart: true, AuthMethod: "m"}},
		{"connect/user-properties", &Connect{Version: v, CleanStart: true, UserProperties: ups}},
		{"connect/empty-id-persistent", &Connect{Version: v}},
		{"connect/will-delay", &Connect{Version: v, CleanStart: true, Will: &Will{Topic: "w", DelayInterval: 1}}},
		{"connect/will-user-properties", &Connect{Version: v, CleanStart: true, Will: &Will{Topic: "w", UserProperties: ups}}},
		{"publish/message-expiry", &Publish{Version: v, Topic: "t", MessageExpiry: 1}},
		{"publish/payload-format", &Publish{Version: v, Topic: "t", PayloadFormat: 1}},
		{"publish/content-type", &Publish{Version: v, Topic: "t", ContentType: "c"}},
		{"publish/response-topic", &Publish{Version: v, Topic: "t", ResponseTopic: "r"}},
		{"publish/correlation", &Publish{Version: v, Topic: "t", CorrelationData: []byte{}}},
		{"publish/topic-alias", &Publish{Version: v, Topic: "t", TopicAlias: 1}},
		{"publish/user-properties", &Publish{Version: v, Topic: "t", UserProperties: ups}},
		{"publish/subscription-ids", &Publish{Version: v, Topic: "t", SubscriptionIDs: []uint32{1}}},
		{"ack/reason-code", &Ack{Version: v, Kind: PUBACK, PacketID: 1, ReasonCode: NotAuthorized}},
		{"ack/reason-string", &Ack{Version: v, Kind: PUBACK, PacketID: 1, ReasonString: "r"}},
		{"subscribe/id", &Subscribe{Version: v, PacketID: 1, SubscriptionID: 1, Subscriptions: []Subscription{{Filter: "a"}}}},
		{"subscribe/user-properties", &Subscribe{Version: v, PacketID: 1, UserProperties: ups, Subscriptions: []Subscription{{Filter: "a"}}}},
		{"subscribe/no-local", &Subscribe{Version: v, PacketID: 1, Subscriptions: []Subscription{{Filter: "a", NoLocal: true}}}},
		{"subscribe/retain-as-published", &Subscribe{Version: v, PacketID: 1, Subscriptions: []Subscription{{Filter: "a", RetainAsPublished: true}}}},
		{"subscribe/retain-handling", &Subscribe{Version: v, PacketID: 1, Subscriptions: []Subscription{{Filter: "a", RetainHandling: RetainDoNotSend}}}},
		{"unsubscribe/user-properties", &Unsubscribe{Version: v, PacketID: 1, UserProperties: ups, Filters: []string{"a"}}},
		{"disconnect/reason-code", &Disconnect{Version: v, ReasonCode: DisconnectWithWillMessage}},
		{"disconnect/session-expiry", &Disconnect{Version: v, SessionExpiry: Ptr(uint32(0))}},
		{"disconnect/reason-string", &Disconnect{Version: v, ReasonString: "bye"}},
	}
	for _, c := range cases {
		if err := c.p.Validate(); !errors.Is(err, ErrNotInV311) {
			t.Errorf("%s: Validate = %v, want ErrNotInV311", c.name, err)
		}
	}
	if err := (&Publish{Version: v, TopicAlias: 1}).Validate(); !errors.Is(err, ErrEmptyTopic) {
		t.Errorf("publish without topic: Validate = %v, want ErrEmptyTopic", err)
	}
}

// checkRoundTrip311 is checkRoundTrip at level 4.
func checkRoundTrip311(t *testing.T, p Packet) {
	t.Helper()
	wire := p.AppendTo(nil)
	if p.Len() != len(wire) {
		t.Fatalf("%T: Len() = %d, AppendTo wrote %d bytes", p, p.Len(), len(wire))
	}
	q, err := DecodeBytesVersion(wire, Version311)
	if err != nil {
		t.Fatalf("%T %+v re-encoded as % x does not decode: %v", p, p, wire, err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("decode→encode→decode changed the packet\nfirst:  %+v\nsecond: %+v\nwire: % x", p, q, wire)
	}
}

// FuzzDecode311 holds the level-4 decoders to the same promise as FuzzDecode: a *Error, or
// a value that encodes to bytes which decode to it again.
func FuzzDecode311(f *testing.F) {
	for _, c := range goldenCases311() {
		f.Add(c.want)
	}
	for _, c := range invalidCases311() {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeBytesVersion(b, Version311)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		checkRoundTrip311(t, p)
	})
}

// FuzzPublish311 decodes level-4 PUBLISH bodies into a reused Publish that held every MQTT 5
// property: none may survive into a level-4 result.
func FuzzPublish311(f *testing.F) {
	f.Add(byte(0), wire("00 03", txt("a/b"), txt("hi")))
	f.Add(byte(0x0B), wire("00 01", txt("t"), "12 34", txt("z")))
	rich := fuzzRichPublish().AppendTo(nil)
	f.Fuzz(func(t *testing.T, flags byte, body []byte) {
		flags &= 0x0F
		fresh := Publish{Version: Version311}
		err := fresh.Decode(flags, body)
		var reused Publish
		h, rb := splitWire(t, rich)
		if err := reused.Decode(h&0x0F, rb); err != nil {
			t.Fatalf("rich seed does not decode: %v", err)
		}
		reused.Version = Version311
		err2 := reused.Decode(flags, body)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("fresh decode: %v; reused decode: %v", err, err2)
		}
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if !samePublish(&fresh, &reused) {
			t.Fatalf("reused Publish differs\nfresh:  %+v\nreused: %+v", fresh, reused)
		}
		if fresh.HasProperties() {
			t.Fatalf("level-4 decode has properties: %+v", fresh)
		}
		wire := fresh.AppendTo(nil)
		_, b := splitWire(t, wire)
		if !bytes.Equal(b, body) {
			t.Fatalf("re-encoded body % x, want % x", b, body)
		}
	})
}

// TestPublish311Allocs keeps the level-4 PUBLISH path free of allocations.
func TestPublish311Allocs(t *testing.T) {
	p := Publish{Version: Version311, Topic: "a/b", QoS: 1, PacketID: 9, Payload: make([]byte, 64)}
	buf := make([]byte, 0, 256)
	var q Publish
	q.Version = Version311
	n := testing.AllocsPerRun(100, func() {
		buf = p.AppendTo(buf[:0])
		if err := q.Decode(buf[0]&0x0F, buf[2:]); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per encode+decode, want 0", n)
	}
}
