package packet

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// txt marks literal text inside wire(); every other string given to wire() is hex.
type txt string

// wire assembles expected bytes from hex strings ("00 04"), txt("MQTT") literals and raw
// []byte parts. Golden vectors are written with it by hand from the specification's layouts,
// never produced by the encoder under test.
func wire(parts ...any) []byte {
	var out []byte
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			b, err := hex.DecodeString(strings.ReplaceAll(v, " ", ""))
			if err != nil {
				panic(fmt.Sprintf("bad hex %q: %v", v, err))
			}
			out = append(out, b...)
		case txt:
			out = append(out, v...)
		case []byte:
			out = append(out, v...)
		default:
			panic(fmt.Sprintf("wire: unexpected part %T", p))
		}
	}
	return out
}

type goldenCase struct {
	name string
	p    Packet
	want []byte
}

func goldenCases() []goldenCase {
	return []goldenCase{
		// CONNECT (section 3.1).
		{"connect/minimal", &Connect{}, wire(
			"10 0D",              // CONNECT, remaining length 13
			"00 04", txt("MQTT"), // protocol name
			"05",    // protocol version
			"00",    // connect flags: none
			"00 00", // keep alive
			"00",    // property length
			"00 00", // empty client identifier
		)},
		{"connect/password-without-username", &Connect{ClientID: "c", KeepAlive: 30, Password: []byte("s")}, wire(
			"10 11",
			"00 04", txt("MQTT"), "05",
			"40",    // password flag only: allowed since MQTT 5
			"00 1E", // keep alive 30
			"00",
			"00 01", txt("c"),
			"00 01", txt("s"),
		)},
		{"connect/full", &Connect{
			ClientID:            "cid",
			CleanStart:          true,
			KeepAlive:           60,
			Username:            "user",
			Password:            []byte("pw"),
			SessionExpiry:       120,
			ReceiveMaximum:      20,
			MaximumPacketSize:   1024,
			TopicAliasMaximum:   10,
			RequestResponseInfo: true,
			RequestProblemInfo:  Ptr(false),
			AuthMethod:          "m",
			AuthData:            []byte{1, 2},
			UserProperties:      []UserProperty{{"k", "v"}},
			Will: &Will{
				Topic:           "w/t",
				Payload:         []byte("bye"),
				QoS:             1,
				Retain:          true,
				DelayInterval:   5,
				PayloadFormat:   1,
				MessageExpiry:   300,
				ContentType:     "text",
				ResponseTopic:   "r",
				CorrelationData: []byte{0xCA, 0xFE},
				UserProperties:  []UserProperty{{"a", "b"}},
			},
		}, wire(
			"10 6C", // remaining length 108
			"00 04", txt("MQTT"), "05",
			"EE",                 // user name, password, will retain, will QoS 1, will, clean start
			"00 3C",              // keep alive 60
			"24",                 // property length 36
			"11 00 00 00 78",     // session expiry interval 120
			"21 00 14",           // receive maximum 20
			"27 00 00 04 00",     // maximum packet size 1024
			"22 00 0A",           // topic alias maximum 10
			"19 01",              // request response information
			"17 00",              // request problem information 0
			"15 00 01", txt("m"), // authentication method
			"16 00 02 01 02",                        // authentication data
			"26 00 01", txt("k"), "00 01", txt("v"), // user property
			"00 03", txt("cid"), // client identifier
			"23",                    // will property length 35
			"18 00 00 00 05",        // will delay interval 5
			"01 01",                 // payload format indicator
			"02 00 00 01 2C",        // message expiry interval 300
			"03 00 04", txt("text"), // content type
			"08 00 01", txt("r"), // response topic
			"09 00 02 CA FE", // correlation data
			"26 00 01", txt("a"), "00 01", txt("b"),
			"00 03", txt("w/t"), // will topic
			"00 03", txt("bye"), // will payload
			"00 04", txt("user"),
			"00 02", txt("pw"),
		)},

		// CONNACK (section 3.2).
		{"connack/minimal", &Connack{}, wire("20 03 00 00 00")},
		{"connack/refused", &Connack{ReasonCode: NotAuthorized}, wire("20 03 00 87 00")},
		{"connack/full", &Connack{
			SessionPresent:       true,
			SessionExpiry:        Ptr(uint32(3600)),
			ReceiveMaximum:       100,
			MaximumQoS:           Ptr(byte(1)),
			RetainAvailable:      Ptr(false),
			MaximumPacketSize:    65536,
			AssignedClientID:     "auto-1",
			TopicAliasMaximum:    16,
			ReasonString:         "ok",
			UserProperties:       []UserProperty{{"x", "y"}, {"x", "z"}},
			WildcardSubAvailable: Ptr(true),
			SubIDAvailable:       Ptr(false),
			SharedSubAvailable:   Ptr(true),
			ServerKeepAlive:      Ptr(uint16(30)),
			ResponseInfo:         "resp",
			ServerReference:      "srv",
			AuthMethod:           "m",
			AuthData:             []byte{9},
		}, wire(
			"20 51",                   // remaining length 81
			"01",                      // session present
			"00",                      // success
			"4E",                      // property length 78
			"11 00 00 0E 10",          // session expiry interval 3600
			"21 00 64",                // receive maximum 100
			"24 01",                   // maximum QoS 1
			"25 00",                   // retain not available
			"27 00 01 00 00",          // maximum packet size 65536
			"12 00 06", txt("auto-1"), // assigned client identifier
			"22 00 10",            // topic alias maximum 16
			"1F 00 02", txt("ok"), // reason string
			"26 00 01", txt("x"), "00 01", txt("y"),
			"26 00 01", txt("x"), "00 01", txt("z"),
			"28 01",                 // wildcard subscriptions available
			"29 00",                 // subscription identifiers not available
			"2A 01",                 // shared subscriptions available
			"13 00 1E",              // server keep alive 30
			"1A 00 04", txt("resp"), // response information
			"1C 00 03", txt("srv"), // server reference
			"15 00 01", txt("m"),
			"16 00 01 09",
		)},

		// PUBLISH (section 3.3).
		{"publish/qos0", &Publish{Topic: "a/b", Payload: []byte("hi")}, wire(
			"30 08", "00 03", txt("a/b"), "00", txt("hi"),
		)},
		{"publish/qos0-empty-payload", &Publish{Topic: "t", Payload: []byte{}}, wire(
			"30 04 00 01", txt("t"), "00",
		)},
		{"publish/qos1-retain", &Publish{
			Topic: "t", QoS: 1, Retain: true, PacketID: 0x1234, Payload: []byte{0, 0xFF},
		}, wire(
			"33 08", // QoS 1, RETAIN
			"00 01", txt("t"),
			"12 34", // packet identifier
			"00",    // property length
			"00 FF", // payload
		)},
		{"publish/alias-only", &Publish{TopicAlias: 5, Payload: []byte("p")}, wire(
			"30 07",
			"00 00",       // zero-length topic name: the alias stands for it
			"03 23 00 05", // topic alias 5
			txt("p"),
		)},
		{"publish/qos2-all-properties", &Publish{
			Topic:           "s/x",
			QoS:             2,
			Dup:             true,
			PacketID:        7,
			Payload:         []byte("data"),
			PayloadFormat:   1,
			MessageExpiry:   60,
			TopicAlias:      3,
			ResponseTopic:   "re/1",
			CorrelationData: []byte{1, 2, 3},
			ContentType:     "ct",
			SubscriptionIDs: []uint32{1, 200, MaxVBI},
			UserProperties:  []UserProperty{{"u", "1"}, {"u", "2"}},
		}, wire(
			"3C 40", // DUP, QoS 2; remaining length 64
			"00 03", txt("s/x"),
			"00 07",                 // packet identifier
			"34",                    // property length 52
			"01 01",                 // payload format indicator: UTF-8
			"02 00 00 00 3C",        // message expiry interval 60
			"23 00 03",              // topic alias 3
			"08 00 04", txt("re/1"), // response topic
			"09 00 03 01 02 03",   // correlation data
			"0B 01",               // subscription identifier 1
			"0B C8 01",            // subscription identifier 200
			"0B FF FF FF 7F",      // subscription identifier 268435455
			"03 00 02", txt("ct"), // content type
			"26 00 01", txt("u"), "00 01", txt("1"),
			"26 00 01", txt("u"), "00 01", txt("2"),
			txt("data"),
		)},
		{"publish/two-byte-remaining-length", &Publish{Topic: "t", Payload: bytes.Repeat([]byte{'x'}, 200)}, wire(
			"30 CC 01", // remaining length 204 as a two-byte variable byte integer
			"00 01", txt("t"), "00",
			bytes.Repeat([]byte{'x'}, 200),
		)},

		// PUBACK, PUBREC, PUBREL, PUBCOMP (sections 3.4 to 3.7): the short form with only the
		// packet identifier, the form with a reason code, and the form with properties.
		{"puback/2", &Ack{Kind: PUBACK, PacketID: 0x0102}, wire("40 02 01 02")},
		{"puback/3", &Ack{Kind: PUBACK, PacketID: 1, ReasonCode: NoMatchingSubscribers}, wire("40 03 00 01 10")},
		{"puback/full", &Ack{Kind: PUBACK, PacketID: 2, ReasonCode: QuotaExceeded, ReasonString: "full"}, wire(
			"40 0B 00 02 97", "07", "1F 00 04", txt("full"),
		)},
		{"pubrec/2", &Ack{Kind: PUBREC, PacketID: 0xFFFF}, wire("50 02 FF FF")},
		{"pubrec/3", &Ack{Kind: PUBREC, PacketID: 3, ReasonCode: UnspecifiedError}, wire("50 03 00 03 80")},
		{"pubrec/full", &Ack{Kind: PUBREC, PacketID: 4, UserProperties: []UserProperty{{"a", "b"}}}, wire(
			"50 0B 00 04", "00", "07", "26 00 01", txt("a"), "00 01", txt("b"),
		)},
		{"pubrel/2", &Ack{Kind: PUBREL, PacketID: 10}, wire("62 02 00 0A")},
		{"pubrel/3", &Ack{Kind: PUBREL, PacketID: 10, ReasonCode: PacketIdentifierNotFound}, wire("62 03 00 0A 92")},
		{"pubrel/full", &Ack{
			Kind: PUBREL, PacketID: 0xFFFF, ReasonCode: PacketIdentifierNotFound,
			ReasonString: "gone", UserProperties: []UserProperty{{"a", "b"}},
		}, wire(
			"62 12",    // PUBREL carries fixed flags 0010; remaining length 18
			"FF FF 92", // packet identifier, reason code
			"0E",       // property length 14
			"1F 00 04", txt("gone"),
			"26 00 01", txt("a"), "00 01", txt("b"),
		)},
		{"pubcomp/2", &Ack{Kind: PUBCOMP, PacketID: 1}, wire("70 02 00 01")},
		{"pubcomp/3", &Ack{Kind: PUBCOMP, PacketID: 1, ReasonCode: PacketIdentifierNotFound}, wire("70 03 00 01 92")},
		{"pubcomp/full", &Ack{Kind: PUBCOMP, PacketID: 9, ReasonString: "x"}, wire(
			"70 08 00 09", "00", "04", "1F 00 01", txt("x"),
		)},

		// SUBSCRIBE, SUBACK (sections 3.8 and 3.9).
		{"subscribe/options", &Subscribe{
			PacketID:       10,
			SubscriptionID: 300,
			UserProperties: []UserProperty{{"p", "q"}},
			Subscriptions: []Subscription{
				{Filter: "a/+", QoS: 1},
				{Filter: "b/#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: RetainDoNotSend},
				{Filter: "$share/g/c", RetainHandling: RetainSendIfNewSubscription},
			},
		}, wire(
			"82 26",    // SUBSCRIBE carries fixed flags 0010; remaining length 38
			"00 0A",    // packet identifier
			"0A",       // property length 10
			"0B AC 02", // subscription identifier 300
			"26 00 01", txt("p"), "00 01", txt("q"),
			"00 03", txt("a/+"), "01", // QoS 1
			"00 03", txt("b/#"), "2E", // QoS 2, no local, retain as published, retain handling 2
			"00 0A", txt("$share/g/c"), "10", // QoS 0, retain handling 1
		)},
		{"suback/minimal", &Suback{PacketID: 1, ReasonCodes: []ReasonCode{GrantedQoS0}}, wire("90 04 00 01 00 00")},
		{"suback/full", &Suback{
			PacketID:       10,
			ReasonString:   "r",
			UserProperties: []UserProperty{{"k", "v"}},
			ReasonCodes:    []ReasonCode{GrantedQoS1, GrantedQoS2, TopicFilterInvalid},
		}, wire(
			"90 11 00 0A",
			"0B", "1F 00 01", txt("r"), "26 00 01", txt("k"), "00 01", txt("v"),
			"01 02 8F",
		)},

		// UNSUBSCRIBE, UNSUBACK (sections 3.10 and 3.11).
		{"unsubscribe", &Unsubscribe{
			PacketID:       11,
			UserProperties: []UserProperty{{"k", "v"}},
			Filters:        []string{"a/b", "$share/g/#"},
		}, wire(
			"A2 1B", // UNSUBSCRIBE carries fixed flags 0010; remaining length 27
			"00 0B",
			"07", "26 00 01", txt("k"), "00 01", txt("v"),
			"00 03", txt("a/b"),
			"00 0A", txt("$share/g/#"),
		)},
		{"unsuback/minimal", &Unsuback{PacketID: 11, ReasonCodes: []ReasonCode{Success, NoSubscriptionExisted}}, wire(
			"B0 05 00 0B 00 00 11",
		)},
		{"unsuback/reason-string", &Unsuback{
			PacketID: 2, ReasonString: "no", ReasonCodes: []ReasonCode{NotAuthorized},
		}, wire(
			"B0 09 00 02", "05 1F 00 02", txt("no"), "87",
		)},

		// PINGREQ, PINGRESP (sections 3.12 and 3.13).
		{"pingreq", &Pingreq{}, wire("C0 00")},
		{"pingresp", &Pingresp{}, wire("D0 00")},

		// DISCONNECT (section 3.14).
		{"disconnect/empty", &Disconnect{}, wire("E0 00")},
		{"disconnect/reason-only", &Disconnect{ReasonCode: DisconnectWithWillMessage}, wire("E0 01 04")},
		{"disconnect/success-with-property", &Disconnect{ReasonString: "x"}, wire(
			"E0 06 00 04 1F 00 01", txt("x"),
		)},
		{"disconnect/properties", &Disconnect{
			ReasonCode:      ServerMoved,
			SessionExpiry:   Ptr(uint32(0)),
			ReasonString:    "bye",
			ServerReference: "other:1883",
			UserProperties:  []UserProperty{{"a", "b"}},
		}, wire(
			"E0 21 9D",
			"1F",             // property length 31
			"11 00 00 00 00", // session expiry interval 0, present
			"1F 00 03", txt("bye"),
			"1C 00 0A", txt("other:1883"),
			"26 00 01", txt("a"), "00 01", txt("b"),
		)},

		// AUTH (section 3.15).
		{"auth/empty", &Auth{}, wire("F0 00")},
		{"auth/method-only", &Auth{ReasonCode: ReAuthenticate, AuthMethod: "m"}, wire(
			"F0 06 19", "04", "15 00 01", txt("m"),
		)},
		{"auth/full", &Auth{
			ReasonCode:     ContinueAuthentication,
			AuthMethod:     "SCRAM",
			AuthData:       []byte{0xAB, 0xCD},
			ReasonString:   "more",
			UserProperties: []UserProperty{{"a", "b"}},
		}, wire(
			"F0 1D 18",
			"1B", // property length 27
			"15 00 05", txt("SCRAM"),
			"16 00 02 AB CD",
			"1F 00 04", txt("more"),
			"26 00 01", txt("a"), "00 01", txt("b"),
		)},
	}
}

func TestGolden(t *testing.T) {
	t.Parallel()
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := c.p.AppendTo(nil)
			if !bytes.Equal(got, c.want) {
				t.Fatalf("AppendTo:\n got % X\nwant % X", got, c.want)
			}
			if n := c.p.Len(); n != len(c.want) {
				t.Errorf("Len() = %d, want %d", n, len(c.want))
			}

			// Appending after existing bytes keeps them and adds the same encoding.
			prefix := []byte{0xDE, 0xAD}
			got = c.p.AppendTo(prefix[:2:2])
			if !bytes.Equal(got[:2], prefix) || !bytes.Equal(got[2:], c.want) {
				t.Errorf("AppendTo(prefix) = % X", got)
			}

			dec, err := DecodeBytes(c.want)
			if err != nil {
				t.Fatalf("DecodeBytes: %v", err)
			}
			if dec.Type() != c.p.Type() {
				t.Errorf("decoded type %v, want %v", dec.Type(), c.p.Type())
			}
			if !reflect.DeepEqual(dec, c.p) {
				t.Errorf("decoded\n %#v\nwant\n %#v", dec, c.p)
			}
		})
	}
}

// TestGoldenViaReader reads every golden vector off one stream and decodes it again, so the
// Reader path and the DecodeBytes path agree.
func TestGoldenViaReader(t *testing.T) {
	t.Parallel()
	cases := goldenCases()
	var stream []byte
	for _, c := range cases {
		stream = append(stream, c.want...)
	}
	r := NewReader(bytes.NewReader(stream), 16)
	for _, c := range cases {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("%s: ReadFrame: %v", c.name, err)
		}
		p, err := Decode(&f)
		if err != nil {
			t.Fatalf("%s: Decode: %v", c.name, err)
		}
		if !reflect.DeepEqual(p, c.p) {
			t.Errorf("%s: decoded\n %#v\nwant\n %#v", c.name, p, c.p)
		}
		f.Release()
	}
	if _, err := r.ReadFrame(); err == nil {
		t.Fatal("ReadFrame after the last packet: no error")
	}
}

// TestDecodeAlternativeForms covers valid encodings the encoder never produces because a
// shorter one exists: the receiver must still accept them.
func TestDecodeAlternativeForms(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   []byte
		want Packet
	}{
		{"puback/empty-properties", wire("40 04 00 01 00 00"), &Ack{Kind: PUBACK, PacketID: 1}},
		{"pubrel/success-code", wire("62 03 00 01 00"), &Ack{Kind: PUBREL, PacketID: 1}},
		{"disconnect/success-code", wire("E0 01 00"), &Disconnect{}},
		{"disconnect/empty-properties", wire("E0 02 8B 00"), &Disconnect{ReasonCode: ServerShuttingDown}},
		{"connack/no-property-length", wire("20 02 00 80"), &Connack{ReasonCode: UnspecifiedError}},
		{"publish/repeated-user-property-name", wire(
			"30 12 00 01", txt("t"),
			"0E", "26 00 01", txt("k"), "00 01", txt("1"), "26 00 01", txt("k"), "00 01", txt("2"),
		), &Publish{Topic: "t", Payload: []byte{}, UserProperties: []UserProperty{{"k", "1"}, {"k", "2"}}}},
		{"publish/three-byte-vbi-subscription-id", wire(
			"30 09 00 01", txt("t"), "04 0B 80 80 01", txt("z"),
		), &Publish{Topic: "t", Payload: []byte("z"), SubscriptionIDs: []uint32{16384}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeBytes(c.in)
			if err != nil {
				t.Fatalf("DecodeBytes: %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("decoded\n %#v\nwant\n %#v", got, c.want)
			}
		})
	}
}

// TestPublishHeaderAndPayload checks that AppendHeaderTo plus the payload is AppendTo, the
// split a writer uses to send a large payload without copying it.
func TestPublishHeaderAndPayload(t *testing.T) {
	t.Parallel()
	for _, c := range goldenCases() {
		p, ok := c.p.(*Publish)
		if !ok {
			continue
		}
		hdr := p.AppendHeaderTo(nil)
		if got := append(hdr, p.Payload...); !bytes.Equal(got, c.want) {
			t.Errorf("%s: header+payload = % X, want % X", c.name, got, c.want)
		}
	}
}

// TestDecodeReuse decodes a packet with properties and then one without into the same
// Publish: nothing of the first may survive.
func TestDecodeReuse(t *testing.T) {
	t.Parallel()
	rich := wire("3C 40 00 03", txt("s/x"), "00 07 34",
		"01 01", "02 00 00 00 3C", "23 00 03", "08 00 04", txt("re/1"), "09 00 03 01 02 03",
		"0B 01", "0B C8 01", "0B FF FF FF 7F", "03 00 02", txt("ct"),
		"26 00 01", txt("u"), "00 01", txt("1"), "26 00 01", txt("u"), "00 01", txt("2"),
		txt("data"))
	plain := wire("30 08 00 03", txt("a/b"), "00", txt("hi"))
	var p Publish
	if err := p.Decode(rich[0]&0x0F, rich[2:]); err != nil {
		t.Fatal(err)
	}
	if err := p.Decode(plain[0]&0x0F, plain[2:]); err != nil {
		t.Fatal(err)
	}
	want := Publish{Topic: "a/b", Payload: []byte("hi")}
	if p.QoS != 0 || p.Dup || p.PacketID != 0 || p.PayloadFormat != 0 || p.MessageExpiry != 0 ||
		p.TopicAlias != 0 || p.ResponseTopic != "" || p.CorrelationData != nil || p.ContentType != "" ||
		len(p.SubscriptionIDs) != 0 || len(p.UserProperties) != 0 ||
		p.Topic != want.Topic || !bytes.Equal(p.Payload, want.Payload) {
		t.Errorf("second decode kept state from the first: %#v", p)
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	types := map[Type]string{
		CONNECT: "CONNECT", PUBREL: "PUBREL", AUTH: "AUTH", 0: "Type(0)", 16: "Type(16)",
	}
	for ty, want := range types {
		if got := ty.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", byte(ty), got, want)
		}
	}
	codes := map[ReasonCode]string{
		Success: "success", MalformedPacket: "malformed packet",
		WildcardSubscriptionsNotSupported: "wildcard subscriptions not supported",
		0x03:                              "reason code 0x3", 0xFF: "reason code 0xff",
	}
	for c, want := range codes {
		if got := c.String(); got != want {
			t.Errorf("ReasonCode(%#x).String() = %q, want %q", byte(c), got, want)
		}
	}
	if Success.IsError() || !UnspecifiedError.IsError() || !ReasonCode(0xFF).IsError() {
		t.Error("IsError: wrong split at 0x80")
	}
	if !TopicAliasInvalid.Defined() || ReasonCode(0x03).Defined() {
		t.Error("Defined: wrong answer")
	}
}
