package packet

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// The boundaries of Table 1-1 (section 1.5.5): the largest value of each length and the
// smallest of the next.
var vbiBoundaries = []struct {
	v   int
	enc []byte
}{
	{0, []byte{0x00}},
	{1, []byte{0x01}},
	{127, []byte{0x7F}},
	{128, []byte{0x80, 0x01}},
	{321, []byte{0xC1, 0x02}}, // the worked example: 65 + 2*128
	{16383, []byte{0xFF, 0x7F}},
	{16384, []byte{0x80, 0x80, 0x01}},
	{2097151, []byte{0xFF, 0xFF, 0x7F}},
	{2097152, []byte{0x80, 0x80, 0x80, 0x01}},
	{268435455, []byte{0xFF, 0xFF, 0xFF, 0x7F}},
}

func TestVBIBoundaries(t *testing.T) {
	t.Parallel()
	if MaxVBI != 268435455 {
		t.Fatalf("MaxVBI = %d", MaxVBI)
	}
	for _, c := range vbiBoundaries {
		if got := AppendVBI(nil, c.v); !bytes.Equal(got, c.enc) {
			t.Errorf("AppendVBI(%d) = % X, want % X", c.v, got, c.enc)
		}
		if got := AppendVBI([]byte{0xAA}, c.v); !bytes.Equal(got[1:], c.enc) || got[0] != 0xAA {
			t.Errorf("AppendVBI(prefix, %d) = % X", c.v, got)
		}
		if got := VBILen(c.v); got != len(c.enc) {
			t.Errorf("VBILen(%d) = %d, want %d", c.v, got, len(c.enc))
		}
		v, n, err := ReadVBI(c.enc)
		if err != nil || v != c.v || n != len(c.enc) {
			t.Errorf("ReadVBI(% X) = %d, %d, %v; want %d, %d, nil", c.enc, v, n, err, c.v, len(c.enc))
		}
		// Bytes after the integer are not part of it.
		v, n, err = ReadVBI(append(append([]byte{}, c.enc...), 0xFF, 0x01))
		if err != nil || v != c.v || n != len(c.enc) {
			t.Errorf("ReadVBI(% X + tail) = %d, %d, %v", c.enc, v, n, err)
		}
		// Every proper prefix is an integer cut short: no value, no error.
		for i := 0; i < len(c.enc); i++ {
			if v, n, err := ReadVBI(c.enc[:i]); v != 0 || n != 0 || err != nil {
				t.Errorf("ReadVBI(% X) = %d, %d, %v; want 0, 0, nil", c.enc[:i], v, n, err)
			}
		}
	}
}

func TestReadVBIRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   []byte
		rule string
	}{
		// A continuation bit on the fourth byte asks for a fifth, and four is the maximum.
		{"five-bytes", []byte{0x80, 0x80, 0x80, 0x80, 0x01}, ""},
		{"five-bytes-max", []byte{0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, ""},
		{"fourth-byte-continues", []byte{0xFF, 0xFF, 0xFF, 0xFF}, ""},
		// [MQTT-1.5.5-1] A zero final byte after a continuation is a longer form than needed.
		{"zero-in-two", []byte{0x80, 0x00}, "MQTT-1.5.5-1"},
		{"127-in-two", []byte{0xFF, 0x00}, "MQTT-1.5.5-1"},
		{"zero-in-three", []byte{0x80, 0x80, 0x00}, "MQTT-1.5.5-1"},
		{"16383-in-three", []byte{0xFF, 0xFF, 0x00}, "MQTT-1.5.5-1"},
		{"zero-in-four", []byte{0x80, 0x80, 0x80, 0x00}, "MQTT-1.5.5-1"},
	}
	for _, c := range cases {
		v, n, err := ReadVBI(c.in)
		if err == nil {
			t.Errorf("%s: ReadVBI(% X) = %d, %d, nil; want an error", c.name, c.in, v, n)
			continue
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v is not ErrMalformed", c.name, err)
		}
		var e *Error
		if !errors.As(err, &e) || e.Rule != c.rule {
			t.Errorf("%s: error %v, want rule %q", c.name, err, c.rule)
		}
		if v != 0 || n != 0 {
			t.Errorf("%s: got v=%d n=%d with an error", c.name, v, n)
		}
	}
}

// TestReaderRemainingLength runs the same boundaries through Reader, which parses the
// Remaining Length off a stream byte by byte.
func TestReaderRemainingLength(t *testing.T) {
	t.Parallel()
	for _, c := range vbiBoundaries[:6] { // bodies up to 16383 bytes are cheap to build
		body := bytes.Repeat([]byte{0x5A}, c.v)
		in := append(append([]byte{0x30}, c.enc...), body...)
		r := NewReader(bytes.NewReader(in), 16)
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("remaining length %d: %v", c.v, err)
		}
		if f.Header != 0x30 || !bytes.Equal(f.Body, body) {
			t.Errorf("remaining length %d: header %#x, body of %d bytes", c.v, f.Header, len(f.Body))
		}
		f.Release()
		if _, err := r.ReadFrame(); err != io.EOF {
			t.Errorf("remaining length %d: after the packet got %v, want io.EOF", c.v, err)
		}
	}

	bad := []struct {
		name string
		in   []byte
		rule string
	}{
		// 268435455 is the largest Remaining Length; one more would need a fifth byte. The
		// stream ends after the fourth: a fourth byte with its continuation bit set must be
		// refused as it stands, not after waiting for more (which would end in EOF here).
		{"fifth-byte", []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF}, ""},
		{"fifth-byte-zero-value", []byte{0x30, 0x80, 0x80, 0x80, 0x80}, ""},
		{"non-minimal", []byte{0x30, 0x80, 0x00}, "MQTT-1.5.5-1"},
		{"non-minimal-four", []byte{0x30, 0xFF, 0xFF, 0xFF, 0x00}, "MQTT-1.5.5-1"},
	}
	for _, c := range bad {
		r := NewReader(bytes.NewReader(c.in), 16)
		_, err := r.ReadFrame()
		var e *Error
		if !errors.Is(err, ErrMalformed) || !errors.As(err, &e) {
			t.Errorf("%s: got %v, want ErrMalformed", c.name, err)
			continue
		}
		if e.Rule != c.rule {
			t.Errorf("%s: rule %q, want %q", c.name, e.Rule, c.rule)
		}
		if _, _, err := ReadVBI(c.in[1:]); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ReadVBI disagrees with Reader: %v", c.name, err)
		}
	}
}
