package packet

import (
	"bytes"
	"errors"
	"testing"
)

// mqttConnect is the start of a CONNECT variable header: protocol name and version.
var mqttConnect = wire("00 04", txt("MQTT"), "05")

type invalidCase struct {
	name  string
	in    []byte
	class error // ErrMalformed, ErrProtocol, or nil for a code of neither class
	code  ReasonCode
	rule  string
	// bytesOnly marks inputs whose fault is in how the whole packet is framed in a byte
	// slice; a stream reader sees something else (a clean packet and leftovers, or EOF).
	bytesOnly bool
}

func malformedCase(name, rule string, in []byte) invalidCase {
	return invalidCase{name: name, in: in, class: ErrMalformed, code: MalformedPacket, rule: rule}
}

func protocolCase(name, rule string, in []byte) invalidCase {
	return invalidCase{name: name, in: in, class: ErrProtocol, code: ProtocolError, rule: rule}
}

func invalidCases() []invalidCase {
	bo := func(c invalidCase) invalidCase { c.bytesOnly = true; return c }
	const flags = "MQTT-2.1.3-1"
	return []invalidCase{
		// Fixed header.
		malformedCase("type-0", "", wire("00 00")),
		malformedCase("type-0-flags", "", wire("0F 00")),
		malformedCase("flags/connect", flags, wire("11 0D", mqttConnect, "00 00 00 00 00 00")),
		malformedCase("flags/connack", flags, wire("21 03 00 00 00")),
		malformedCase("flags/puback", flags, wire("41 02 00 01")),
		malformedCase("flags/pubrec", flags, wire("52 02 00 01")),
		malformedCase("flags/pubrel", flags, wire("60 02 00 01")),
		malformedCase("flags/pubcomp", flags, wire("78 02 00 01")),
		malformedCase("flags/subscribe", flags, wire("80 07 00 01 00 00 01", txt("a"), "00")),
		malformedCase("flags/suback", flags, wire("91 04 00 01 00 00")),
		malformedCase("flags/unsubscribe", flags, wire("A0 06 00 01 00 00 01", txt("a"))),
		malformedCase("flags/unsuback", flags, wire("B1 04 00 01 00 00")),
		malformedCase("flags/pingreq", flags, wire("C1 00")),
		malformedCase("flags/pingresp", flags, wire("D2 00")),
		malformedCase("flags/disconnect", flags, wire("E1 00")),
		malformedCase("flags/auth", flags, wire("F1 00")),
		malformedCase("remaining-length/five-bytes", "", wire("30 FF FF FF FF 7F")),
		malformedCase("remaining-length/non-minimal", "MQTT-1.5.5-1", wire("30 80 00")),
		bo(malformedCase("bytes/empty", "", nil)),
		bo(malformedCase("bytes/header-only", "", wire("30"))),
		bo(malformedCase("bytes/body-short", "", wire("30 05 00 01", txt("a")))),
		bo(malformedCase("bytes/trailing", "", wire("C0 00 00"))),

		// PUBLISH.
		malformedCase("publish/qos3", "MQTT-3.3.1-4", wire("36 04 00 01", txt("a"), "00")),
		malformedCase("publish/qos3-dup", "MQTT-3.3.1-4", wire("3E 06 00 01", txt("a"), "00 01 00")),
		protocolCase("publish/dup-qos0", "MQTT-3.3.1-2", wire("38 04 00 01", txt("a"), "00")),
		protocolCase("publish/packet-id-0", "MQTT-2.2.1-3", wire("32 06 00 01", txt("a"), "00 00 00")),
		protocolCase("publish/wildcard-plus", "MQTT-3.3.2-2", wire("30 04 00 01", txt("+"), "00")),
		protocolCase("publish/wildcard-hash", "MQTT-3.3.2-2", wire("30 06 00 03", txt("a/#"), "00")),
		protocolCase("publish/response-topic-wildcard", "MQTT-3.3.2-14", wire("30 09 00 01", txt("a"), "05 08 00 02", txt("r+"))),
		protocolCase("publish/topic-alias-0", "MQTT-3.3.2-8", wire("30 07 00 01", txt("a"), "03 23 00 00")),
		protocolCase("publish/empty-topic-no-alias", "", wire("30 03 00 00 00")),
		protocolCase("publish/payload-format-2", "", wire("30 06 00 01", txt("a"), "02 01 02")),
		protocolCase("publish/subscription-id-0", "", wire("30 06 00 01", txt("a"), "02 0B 00")),
		malformedCase("publish/topic-bad-utf8", "MQTT-1.5.4-1", wire("30 04 00 01 FF 00")),
		malformedCase("publish/topic-surrogate", "MQTT-1.5.4-1", wire("30 06 00 03 ED A0 80 00")),
		malformedCase("publish/topic-overlong-nul", "MQTT-1.5.4-1", wire("30 05 00 02 C0 80 00")),
		malformedCase("publish/topic-nul", "MQTT-1.5.4-2", wire("30 06 00 03 61 00 62 00")),
		malformedCase("publish/user-property-nul", "MQTT-1.5.4-2", wire(
			"30 0B 00 01", txt("a"), "07 26 00 01 00 00 01", txt("v"))),
		malformedCase("publish/property-not-allowed", "", wire(
			"30 09 00 01", txt("a"), "05 11 00 00 00 01")), // session expiry interval
		malformedCase("publish/property-unknown", "", wire("30 06 00 01", txt("a"), "02 7F 00")),
		malformedCase("publish/property-id-0", "", wire("30 05 00 01", txt("a"), "01 00")),
		protocolCase("publish/property-duplicate", "", wire(
			"30 0E 00 01", txt("a"), "0A 02 00 00 00 01 02 00 00 00 02")), // message expiry twice
		malformedCase("publish/property-length-past-packet", "", wire("30 06 00 01", txt("a"), "05 01 01")),
		malformedCase("publish/property-value-past-block", "", wire(
			"30 09 00 01", txt("a"), "02 02 00 00 00 01")), // a 4-byte value in a 2-byte block
		malformedCase("publish/property-vbi-non-minimal", "MQTT-1.5.5-1", wire(
			"30 07 00 01", txt("a"), "03 0B 81 00")),
		malformedCase("publish/property-vbi-cut", "", wire("30 06 00 01", txt("a"), "02 0B FF")),
		malformedCase("publish/topic-cut", "", wire("30 03 00 05", txt("a"))),
		malformedCase("publish/packet-id-cut", "", wire("32 04 00 01", txt("a"), "00")),

		// CONNECT.
		{name: "connect/protocol-name", in: wire("10 0D 00 04", txt("MQTX"), "05 00 00 00 00 00 00"),
			code: UnsupportedProtocolVersion, rule: "MQTT-3.1.2-1"},
		{name: "connect/protocol-version", in: wire("10 0D 00 04", txt("MQTT"), "03 00 00 00 00 00 00"),
			code: UnsupportedProtocolVersion, rule: "MQTT-3.1.2-2"},
		malformedCase("connect/reserved-flag", "MQTT-3.1.2-3", wire("10 0D", mqttConnect, "01 00 00 00 00 00")),
		malformedCase("connect/will-qos-without-will", "MQTT-3.1.2-11",
			wire("10 0D", mqttConnect, "08 00 00 00 00 00")),
		malformedCase("connect/will-retain-without-will", "MQTT-3.1.2-13",
			wire("10 0D", mqttConnect, "20 00 00 00 00 00")),
		malformedCase("connect/will-qos3", "MQTT-3.1.2-12", wire("10 0D", mqttConnect, "1C 00 00 00 00 00")),
		protocolCase("connect/receive-maximum-0", "", wire("10 10", mqttConnect, "00 00 00", "03 21 00 00", "00 00")),
		protocolCase("connect/maximum-packet-size-0", "",
			wire("10 12", mqttConnect, "00 00 00", "05 27 00 00 00 00", "00 00")),
		protocolCase("connect/auth-data-without-method", "",
			wire("10 10", mqttConnect, "00 00 00", "03 16 00 00", "00 00")),
		protocolCase("connect/request-problem-info-2", "",
			wire("10 0F", mqttConnect, "00 00 00", "02 17 02", "00 00")),
		malformedCase("connect/client-id-surrogate", "MQTT-1.5.4-1",
			wire("10 10", mqttConnect, "00 00 00 00", "00 03 ED A0 80")),
		malformedCase("connect/will-property-not-allowed", "", wire(
			"10 18", mqttConnect, "04 00 00 00", "00 00", // will flag; no properties; empty client id
			"05 11 00 00 00 01", // session expiry interval among the will properties
			"00 01", txt("a"), "00 00")),
		malformedCase("connect/will-missing", "", wire("10 0D", mqttConnect, "04 00 00 00 00 00")),
		malformedCase("connect/password-missing", "", wire("10 0D", mqttConnect, "40 00 00 00 00 00")),
		malformedCase("connect/name-cut", "", wire("10 03 00 04", txt("M"))),
		malformedCase("connect/trailing", "", wire("10 0E", mqttConnect, "00 00 00 00 00 00 FF")),

		// CONNACK.
		malformedCase("connack/reserved-flags", "MQTT-3.2.2-1", wire("20 03 02 00 00")),
		malformedCase("connack/reserved-flag-7", "MQTT-3.2.2-1", wire("20 03 80 00 00")),
		protocolCase("connack/session-present-with-error", "MQTT-3.2.2-6", wire("20 03 01 80 00")),
		// [MQTT-3.2.2-8] Only the CONNACK table's codes: a code below 0x80 other than 0x00
		// must not pass for success, nor one of another packet's table for a refusal.
		malformedCase("connack/code-01-with-properties", "MQTT-3.2.2-8", wire("20 03 00 01 00")),
		malformedCase("connack/code-10", "MQTT-3.2.2-8", wire("20 03 00 10 00")),
		malformedCase("connack/code-7f", "MQTT-3.2.2-8", wire("20 03 00 7F 00")),
		malformedCase("connack/code-8b-server-shutting-down", "MQTT-3.2.2-8", wire("20 03 00 8B 00")),
		malformedCase("connack/code-a0", "MQTT-3.2.2-8", wire("20 02 00 A0")),
		protocolCase("connack/maximum-qos-2", "", wire("20 05 00 00 02 24 02")),
		protocolCase("connack/receive-maximum-0", "", wire("20 06 00 00 03 21 00 00")),
		protocolCase("connack/maximum-packet-size-0", "", wire("20 08 00 00 05 27 00 00 00 00")),
		protocolCase("connack/retain-available-2", "", wire("20 05 00 00 02 25 02")),
		protocolCase("connack/property-duplicate", "", wire("20 09 00 00 06 21 00 01 21 00 02")),
		malformedCase("connack/property-not-allowed", "", wire("20 06 00 00 03 23 00 01")), // topic alias
		malformedCase("connack/property-value-past-block", "", wire("20 08 00 00 02 11 00 00 00 01")),
		malformedCase("connack/cut", "", wire("20 01 00")),
		malformedCase("connack/trailing", "", wire("20 04 00 00 00 FF")),

		// PUBACK, PUBREC, PUBREL, PUBCOMP.
		protocolCase("puback/packet-id-0", "MQTT-2.2.1-5", wire("40 02 00 00")),
		protocolCase("pubrel/packet-id-0", "MQTT-2.2.1-5", wire("62 02 00 00")),
		malformedCase("puback/cut", "", wire("40 01 00")),
		malformedCase("pubrec/reason-string-cut", "", wire("50 08 00 01 80 04 1F 00 05", txt("a"))),
		protocolCase("pubcomp/reason-string-twice", "",
			wire("70 0C 00 01 80 08 1F 00 01", txt("a"), "1F 00 01", txt("b"))),
		malformedCase("puback/property-not-allowed", "", wire("40 06 00 01 00 02 01 01")), // payload format
		malformedCase("puback/property-length-past-packet", "", wire("40 05 00 01 00 09 1F")),
		malformedCase("puback/trailing", "", wire("40 05 00 01 00 00 FF")),

		// SUBSCRIBE.
		protocolCase("subscribe/no-filters", "MQTT-3.8.3-2", wire("82 03 00 01 00")),
		malformedCase("subscribe/reserved-bit-6", "MQTT-3.8.3-5", wire("82 07 00 01 00 00 01", txt("a"), "40")),
		malformedCase("subscribe/reserved-bit-7", "MQTT-3.8.3-5", wire("82 07 00 01 00 00 01", txt("a"), "81")),
		protocolCase("subscribe/qos3", "", wire("82 07 00 01 00 00 01", txt("a"), "03")),
		protocolCase("subscribe/retain-handling-3", "", wire("82 07 00 01 00 00 01", txt("a"), "30")),
		protocolCase("subscribe/no-local-shared", "MQTT-3.8.3-4", wire(
			"82 10 00 01 00 00 0A", txt("$share/g/a"), "04")),
		protocolCase("subscribe/no-local-shared-second", "MQTT-3.8.3-4", wire(
			"82 14 00 01 00 00 01", txt("a"), "04", "00 0A", txt("$share/g/a"), "05")),
		protocolCase("subscribe/packet-id-0", "MQTT-2.2.1-3", wire("82 07 00 00 00 00 01", txt("a"), "00")),
		protocolCase("subscribe/subscription-id-0", "", wire("82 09 00 01 02 0B 00 00 01", txt("a"), "00")),
		protocolCase("subscribe/subscription-id-twice", "", wire("82 0B 00 01 04 0B 01 0B 02 00 01", txt("a"), "00")),
		malformedCase("subscribe/property-not-allowed", "", wire("82 08 00 01 01 1F 00 01", txt("a"), "00")),
		malformedCase("subscribe/options-missing", "", wire("82 06 00 01 00 00 01", txt("a"))),
		malformedCase("subscribe/filter-bad-utf8", "MQTT-1.5.4-1", wire("82 07 00 01 00 00 01 FE 00")),

		// SUBACK, UNSUBSCRIBE, UNSUBACK.
		protocolCase("suback/no-codes", "", wire("90 03 00 01 00")),
		protocolCase("suback/packet-id-0", "MQTT-2.2.1-6", wire("90 04 00 00 00 00")),
		protocolCase("unsubscribe/no-filters", "MQTT-3.10.3-2", wire("A2 03 00 01 00")),
		protocolCase("unsubscribe/packet-id-0", "MQTT-2.2.1-3", wire("A2 06 00 00 00 00 01", txt("a"))),
		malformedCase("unsubscribe/property-not-allowed", "", wire("A2 08 00 01 02 0B 01 00 01", txt("a"))),
		malformedCase("unsubscribe/filter-cut", "", wire("A2 06 00 01 00 00 02", txt("a"))),
		protocolCase("unsuback/no-codes", "", wire("B0 03 00 01 00")),
		protocolCase("unsuback/packet-id-0", "MQTT-2.2.1-6", wire("B0 04 00 00 00 00")),

		// PINGREQ, PINGRESP, DISCONNECT, AUTH.
		malformedCase("pingreq/body", "", wire("C0 01 00")),
		malformedCase("pingresp/body", "", wire("D0 01 00")),
		malformedCase("disconnect/property-not-allowed", "", wire("E0 05 00 03 23 00 01")),
		protocolCase("disconnect/property-duplicate", "", wire("E0 0C 00 0A 11 00 00 00 01 11 00 00 00 02")),
		malformedCase("disconnect/trailing", "", wire("E0 03 00 00 FF")),
		// [MQTT-3.14.2-1] only the codes of the DISCONNECT table may be used.
		malformedCase("disconnect/reason-code-granted-qos1", "MQTT-3.14.2-1", wire("E0 01 01")),
		malformedCase("disconnect/reason-code-continue-auth", "MQTT-3.14.2-1", wire("E0 01 18")),
		malformedCase("disconnect/reason-code-bad-password", "MQTT-3.14.2-1", wire("E0 02 86 00")),
		malformedCase("disconnect/reason-code-packet-id-in-use", "MQTT-3.14.2-1", wire("E0 01 91")),
		malformedCase("disconnect/reason-code-above-table", "MQTT-3.14.2-1", wire("E0 01 A3")),
		protocolCase("auth/bad-reason-code", "", wire("F0 02 87 00")),
		protocolCase("auth/bad-reason-code-alone", "", wire("F0 01 01")),
		malformedCase("auth/property-not-allowed", "", wire("F0 04 18 02 01 01")),
		malformedCase("auth/trailing", "", wire("F0 03 00 00 FF")),
	}
}

// expectInvalid reports whether err is the *Error the case expects.
func expectInvalid(t *testing.T, c invalidCase, how string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error for % X", how, c.in)
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("%s: error %v (%T) is not *Error", how, err, err)
		return
	}
	if e.Code != c.code {
		t.Errorf("%s: code %v, want %v (%v)", how, e.Code, c.code, err)
	}
	if e.Rule != c.rule {
		t.Errorf("%s: rule %q, want %q (%v)", how, e.Rule, c.rule, err)
	}
	for _, class := range []error{ErrMalformed, ErrProtocol} {
		if got, want := errors.Is(err, class), class == c.class; got != want {
			t.Errorf("%s: errors.Is(err, %v) = %v, want %v", how, class, got, want)
		}
	}
}

func TestInvalid(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, c := range invalidCases() {
		if seen[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p, err := DecodeBytes(c.in)
			if err == nil {
				t.Fatalf("DecodeBytes(% X) = %#v, want an error", c.in, p)
			}
			expectInvalid(t, c, "DecodeBytes", err)

			if c.bytesOnly {
				return
			}
			// The same bytes off a stream must fail the same way, in ReadFrame or in Decode.
			r := NewReader(bytes.NewReader(c.in), 16)
			f, err := r.ReadFrame()
			if err == nil {
				defer f.Release()
				_, err = Decode(&f)
			}
			expectInvalid(t, c, "Reader", err)
		})
	}
}

// TestTruncatedBodies decodes every proper prefix of every golden body. A prefix can be a
// valid shorter packet, but whatever happens must be an answer, never a panic, and errors
// must be *Error values of one of the two classes.
func TestTruncatedBodies(t *testing.T) {
	t.Parallel()
	for _, c := range goldenCases() {
		_, n, err := ReadVBI(c.want[1:])
		if err != nil {
			t.Fatal(err)
		}
		body := c.want[1+n:]
		for i := 0; i < len(body); i++ {
			f := Frame{Header: c.want[0], Body: body[:i:i]}
			_, err := Decode(&f)
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrProtocol) {
				t.Errorf("%s cut to %d bytes: unexpected error %v", c.name, i, err)
			}
		}
	}
}

func TestErrorValue(t *testing.T) {
	t.Parallel()
	want := "packet: malformed packet [MQTT-3.3.1-4]: PUBLISH with both QoS bits set"
	if got := errPubQoS3.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := (&Error{Code: ProtocolError}).Error(), "packet: protocol error"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(ErrTooLarge, ErrTooLarge) || errors.Is(ErrTooLarge, ErrMalformed) ||
		errors.Is(ErrTooLarge, ErrProtocol) {
		t.Error("ErrTooLarge matches the wrong sentinels")
	}
	if errors.Is(errPubQoS3, ErrProtocol) || !errors.Is(errPubQoS3, ErrMalformed) {
		t.Error("a malformed-packet error matches the wrong class")
	}
	if errors.Is(errPubQoS3, errPubDup0) {
		t.Error("two different rule errors match each other")
	}
}
