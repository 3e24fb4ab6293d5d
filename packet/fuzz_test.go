package packet

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The fuzz targets below share one idea: whatever bytes arrive, a decoder either fails with
// a *Error that names a reason code, or yields a value that encodes to bytes which decode to
// the same value again. Seeds cover every packet type; the committed corpus under
// testdata/fuzz keeps the crashers found so far, so plain `go test` replays them.

// fuzzSeedPackets returns valid packets of every type, plain and with every property, so the
// fuzzer starts inside each decoder's branches rather than at its first check.
func fuzzSeedPackets() []Packet {
	ups := []UserProperty{{"k", "v"}, {"k", "w"}}
	return []Packet{
		&Connect{ClientID: "c1", CleanStart: true, KeepAlive: 30},
		&Connect{
			ClientID: "c2", KeepAlive: 60, Username: "u", Password: []byte("p"),
			SessionExpiry: 3600, ReceiveMaximum: 10, MaximumPacketSize: 1 << 20,
			TopicAliasMaximum: 5, RequestResponseInfo: true, RequestProblemInfo: Ptr(false),
			AuthMethod: "SCRAM-SHA-256", AuthData: []byte{1, 2}, UserProperties: ups,
			Will: &Will{
				Topic: "w/t", Payload: []byte("bye"), QoS: 1, Retain: true, DelayInterval: 5,
				PayloadFormat: 1, MessageExpiry: 9, ContentType: "text/plain",
				ResponseTopic: "r/t", CorrelationData: []byte{9}, UserProperties: ups,
			},
		},
		&Connack{},
		&Connack{
			SessionPresent: true, SessionExpiry: Ptr(uint32(60)), ReceiveMaximum: 20,
			MaximumQoS: Ptr(byte(1)), RetainAvailable: Ptr(false), MaximumPacketSize: 4096,
			AssignedClientID: "auto-1", TopicAliasMaximum: 10, ReasonString: "ok",
			UserProperties: ups, WildcardSubAvailable: Ptr(false), SubIDAvailable: Ptr(true),
			SharedSubAvailable: Ptr(false), ServerKeepAlive: Ptr(uint16(20)),
			ResponseInfo: "resp", ServerReference: "other:1883", AuthMethod: "m",
			AuthData: []byte{3},
		},
		&Connack{ReasonCode: NotAuthorized},
		&Publish{Topic: "a/b", Payload: []byte("hello")},
		&Publish{Topic: "a/b", QoS: 1, PacketID: 7, Retain: true, Dup: true, Payload: []byte{}},
		fuzzRichPublish(),
		&Publish{TopicAlias: 4, Payload: []byte("aliased")},
		&Ack{Kind: PUBACK, PacketID: 1},
		&Ack{Kind: PUBREC, PacketID: 2, ReasonCode: NoMatchingSubscribers},
		&Ack{Kind: PUBREL, PacketID: 3, ReasonCode: PacketIdentifierNotFound, ReasonString: "gone"},
		&Ack{Kind: PUBCOMP, PacketID: 4, UserProperties: ups},
		&Subscribe{PacketID: 5, Subscriptions: []Subscription{{Filter: "a/+/c", QoS: 1}}},
		&Subscribe{
			PacketID: 6, SubscriptionID: 99, UserProperties: ups,
			Subscriptions: []Subscription{
				{Filter: "#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: RetainDoNotSend},
				{Filter: "$share/g/x/#", RetainHandling: RetainSendIfNewSubscription},
			},
		},
		&Suback{PacketID: 5, ReasonCodes: []ReasonCode{GrantedQoS1}},
		&Suback{
			PacketID: 6, ReasonString: "partial", UserProperties: ups,
			ReasonCodes: []ReasonCode{GrantedQoS2, NotAuthorized},
		},
		&Unsubscribe{PacketID: 8, Filters: []string{"a/+/c"}},
		&Unsubscribe{PacketID: 9, UserProperties: ups, Filters: []string{"#", "x/y"}},
		&Unsuback{PacketID: 8, ReasonCodes: []ReasonCode{Success}},
		&Unsuback{PacketID: 9, ReasonString: "r", ReasonCodes: []ReasonCode{NoSubscriptionExisted, Success}},
		&Pingreq{},
		&Pingresp{},
		&Disconnect{},
		&Disconnect{ReasonCode: DisconnectWithWillMessage},
		&Disconnect{
			ReasonCode: ServerMoved, SessionExpiry: Ptr(uint32(0)), ReasonString: "moving",
			ServerReference: "b:1883", UserProperties: ups,
		},
		&Auth{},
		&Auth{
			ReasonCode: ContinueAuthentication, AuthMethod: "SCRAM-SHA-256",
			AuthData: []byte("nonce"), ReasonString: "step", UserProperties: ups,
		},
	}
}

// fuzzRichPublish carries every PUBLISH property, repeatable ones twice.
func fuzzRichPublish() *Publish {
	return &Publish{
		Topic: "sensors/x", QoS: 2, PacketID: 65535, Payload: []byte("{}"),
		PayloadFormat: 1, MessageExpiry: 30, TopicAlias: 3, ResponseTopic: "reply/x",
		CorrelationData: []byte("id"), ContentType: "application/json",
		SubscriptionIDs: []uint32{1, MaxVBI},
		UserProperties:  []UserProperty{{"k1", "v1"}, {"k2", "v2"}},
	}
}

func fuzzSeedWires() [][]byte {
	var out [][]byte
	for _, p := range fuzzSeedPackets() {
		out = append(out, p.AppendTo(nil))
	}
	return out
}

// splitWire cuts an encoded packet into its fixed header byte and its body.
func splitWire(t *testing.T, wire []byte) (byte, []byte) {
	t.Helper()
	rl, n, err := ReadVBI(wire[1:])
	if err != nil || n == 0 || 1+n+rl != len(wire) {
		t.Fatalf("encoded packet has a broken fixed header: % x", wire)
	}
	return wire[0], wire[1+n:]
}

// checkDecodeError requires a decode failure to be a *Error whose reason code reports a
// failure, since the client sends that code in DISCONNECT.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("decode error %v (%T) is not a *Error", err, err)
	}
	if !pe.Code.IsError() {
		t.Fatalf("decode error %v carries success code %#x", err, byte(pe.Code))
	}
}

// checkRoundTrip encodes p, decodes the result and requires the same value back. It also
// holds Len to the encoded size and AppendTo to leaving dst's prefix alone.
func checkRoundTrip(t *testing.T, p Packet) {
	t.Helper()
	wire := p.AppendTo(nil)
	if p.Len() != len(wire) {
		t.Fatalf("%T: Len() = %d, AppendTo wrote %d bytes", p, p.Len(), len(wire))
	}
	if got := p.AppendTo([]byte{0xEE}); got[0] != 0xEE || !bytes.Equal(got[1:], wire) {
		t.Fatalf("%T: AppendTo after a prefix wrote % x, want EE % x", p, got, wire)
	}
	q, err := DecodeBytes(wire)
	if err != nil {
		t.Fatalf("%T %+v re-encoded as % x does not decode: %v", p, p, wire, err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("decode→encode→decode changed the packet\nfirst:  %+v\nsecond: %+v\nwire: % x", p, q, wire)
	}
	if again := q.AppendTo(nil); !bytes.Equal(again, wire) {
		t.Fatalf("%T: equal values encode differently:\n% x\n% x", p, wire, again)
	}
}

func FuzzDecode(f *testing.F) {
	for _, w := range fuzzSeedWires() {
		f.Add(w)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeBytes(b)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		checkRoundTrip(t, p)
	})
}

// samePublish compares two decoded PUBLISH packets, treating a nil and an empty list of
// subscription identifiers or user properties as equal: a reused Publish keeps its slices.
func samePublish(a, b *Publish) bool {
	x, y := *a, *b
	for _, p := range []*Publish{&x, &y} {
		if len(p.SubscriptionIDs) == 0 {
			p.SubscriptionIDs = nil
		}
		if len(p.UserProperties) == 0 {
			p.UserProperties = nil
		}
	}
	return reflect.DeepEqual(x, y)
}

func FuzzPublish(f *testing.F) {
	for _, p := range fuzzSeedPackets() {
		if p.Type() == PUBLISH {
			wire := p.AppendTo(nil)
			_, n, _ := ReadVBI(wire[1:])
			f.Add(wire[0]&0x0F, wire[1+n:])
		}
	}
	rich := fuzzRichPublish().AppendTo(nil)
	f.Fuzz(func(t *testing.T, flags byte, body []byte) {
		flags &= 0x0F
		var fresh Publish
		err := fresh.Decode(flags, body)

		// A Publish that already holds every property from an earlier packet must come out
		// the same as a fresh one: nothing may leak from one decode into the next.
		var reused Publish
		h, rb := splitWire(t, rich)
		if err := reused.Decode(h&0x0F, rb); err != nil {
			t.Fatalf("rich seed does not decode: %v", err)
		}
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

		wire := fresh.AppendTo(nil)
		if fresh.Len() != len(wire) {
			t.Fatalf("Len() = %d, AppendTo wrote %d bytes", fresh.Len(), len(wire))
		}
		h, b := splitWire(t, wire)
		if h != byte(PUBLISH)<<4|flags {
			t.Fatalf("fixed header %#x, want type PUBLISH with flags %#x", h, flags)
		}
		var again Publish
		if err := again.Decode(flags, b); err != nil {
			t.Fatalf("%+v re-encoded as % x does not decode: %v", fresh, wire, err)
		}
		if !reflect.DeepEqual(fresh, again) {
			t.Fatalf("decode→encode→decode changed the packet\nfirst:  %+v\nsecond: %+v", fresh, again)
		}
	})
}

func FuzzReader(f *testing.F) {
	wires := fuzzSeedWires()
	for i, w := range wires {
		f.Add(w, uint16(len(w)))
		// Short streams of neighbouring packets, one of them cut off in its last packet.
		if i+2 < len(wires) {
			stream := slices.Concat(w, wires[i+1], wires[i+2])
			f.Add(stream, uint16(256))
			f.Add(stream[:len(stream)-1], uint16(1000))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		// A few packets are enough. The fuzzer minimizes every new input in time that grows
		// with its square, so long streams would leave it minimizing instead of exploring.
		if len(data) > 512 {
			return
		}
		// Keep the limit small: the reader allocates a declared body once it passes the limit,
		// and the point is to exercise the refusal.
		max := 2 + int(limit)%1024
		r := NewReader(bytes.NewReader(data), 16)
		r.SetMaxPacketSize(max)
		off := 0
		for {
			fr, err := r.ReadFrame()
			if err != nil {
				switch {
				case err == io.EOF:
					if off != len(data) {
						t.Fatalf("io.EOF after %d of %d bytes", off, len(data))
					}
				case err == io.ErrUnexpectedEOF:
				default:
					checkDecodeError(t, err)
				}
				return
			}
			size := 1 + VBILen(len(fr.Body)) + len(fr.Body)
			if size > max {
				t.Fatalf("frame of %d bytes passed a limit of %d", size, max)
			}
			if off+size > len(data) {
				t.Fatalf("frames add up to %d bytes, input has %d", off+size, len(data))
			}
			if data[off] != fr.Header || !bytes.Equal(data[off+size-len(fr.Body):off+size], fr.Body) {
				t.Fatalf("frame at %d does not match the input", off)
			}
			off += size
			p, err := Decode(&fr)
			if err != nil {
				checkDecodeError(t, err)
			} else {
				checkRoundTrip(t, p)
			}
			fr.Release()
		}
	})
}

func FuzzVBI(f *testing.F) {
	for _, v := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, MaxVBI} {
		f.Add(AppendVBI(nil, v))
	}
	f.Add([]byte{0x80, 0x00})
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0x7F})
	f.Add([]byte{0x80, 0x80, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, err := ReadVBI(b)
		switch {
		case err != nil:
			checkDecodeError(t, err)
		case n == 0:
			// Incomplete: every byte so far continues, and there are too few to be overlong.
			if len(b) >= 4 {
				t.Fatalf("ReadVBI(% x) waits for more bytes after 4", b)
			}
			for _, c := range b {
				if c < 0x80 {
					t.Fatalf("ReadVBI(% x) missed the final byte", b)
				}
			}
		default:
			if n > 4 || v < 0 || v > MaxVBI || VBILen(v) != n {
				t.Fatalf("ReadVBI(% x) = %d, %d", b, v, n)
			}
			if enc := AppendVBI(nil, v); !bytes.Equal(enc, b[:n]) {
				t.Fatalf("ReadVBI(% x) = %d, which encodes as % x", b[:n], v, enc)
			}
		}

		// The reader parses the Remaining Length with its own loop; it must agree. A limit of
		// five bytes keeps any body from being allocated.
		r := NewReader(bytes.NewReader(append([]byte{byte(PINGREQ) << 4}, b...)), 16)
		r.SetMaxPacketSize(5)
		_, rerr := r.ReadFrame()
		switch {
		case err != nil:
			if rerr != err {
				t.Fatalf("ReadVBI(% x): %v; ReadFrame: %v", b, err, rerr)
			}
		case n == 0:
			if rerr != io.ErrUnexpectedEOF {
				t.Fatalf("ReadVBI(% x) is incomplete; ReadFrame: %v", b, rerr)
			}
		case 1+n+v > 5:
			if rerr != ErrTooLarge {
				t.Fatalf("ReadVBI(% x) = %d; ReadFrame: %v, want ErrTooLarge", b, v, rerr)
			}
		case rerr != nil && rerr != io.ErrUnexpectedEOF:
			t.Fatalf("ReadVBI(% x) = %d; ReadFrame: %v", b, v, rerr)
		}
	})
}

func FuzzTopic(f *testing.F) {
	for _, s := range [][2]string{
		{"a/b", "a/b"}, {"a/+", "a/b"}, {"+/+", "/x"}, {"#", "$SYS/uptime"},
		{"a/#", "a"}, {"$share/g/a/#", "a/b/c"}, {"$share/g", "$share/g"}, {"", "a"},
		{"a/b/", "a/b/"}, {"+", "é/ü"}, {"a\x00b", "a\xffb"}, {"/", "//"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		// Levels, not length, make topics interesting; long inputs only slow the fuzzer down,
		// which otherwise spends its time minimizing them.
		if len(filter) > 256 || len(topic) > 256 {
			return
		}
		_ = ValidateTopicFilter(filter)
		_ = MatchTopic(filter, topic)
		if ValidateTopicName(topic) != nil {
			return
		}
		if HasWildcard(topic) || ValidString(topic) != nil {
			t.Fatalf("ValidateTopicName accepted %q", topic)
		}
		// "$share/{name}/{filter}" read as a filter is a shared subscription to its inner
		// filter, so it does not stand for itself.
		if _, _, shared := SplitShared(topic); shared {
			return
		}
		if !MatchTopic(topic, topic) {
			t.Fatalf("filter %q does not match the equal topic name", topic)
		}
		if _, _, shared := SplitShared(topic + "/#"); !shared && !MatchTopic(topic+"/#", topic) {
			t.Fatalf("filter %q does not match its parent level %q", topic+"/#", topic)
		}
		// [MQTT-4.7.2-1] Wildcards at the first level do not match topics starting with $.
		plus := strings.Repeat("+/", strings.Count(topic, "/")) + "+"
		dollar := topic[0] == '$'
		if MatchTopic(plus, topic) == dollar || MatchTopic("#", topic) == dollar {
			t.Fatalf("%q and # against %q: want match = %v", plus, topic, !dollar)
		}
	})
}
