package packet

import (
	"unicode/utf8"
	"unsafe"
)

// MaxVBI is the largest value a variable byte integer can carry (MQTT 5 §1.5.5), and so the
// largest Remaining Length of any packet.
const MaxVBI = 268435455

// MaxPacketSize is the largest whole packet the protocol can express: one header byte, a
// four-byte Remaining Length and MaxVBI bytes of body.
const MaxPacketSize = 1 + 4 + MaxVBI

// VBILen returns how many bytes AppendVBI uses for v (1 to 4). v must not exceed MaxVBI.
func VBILen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	}
	return 4
}

// AppendVBI appends v as a variable byte integer. v must be in [0, MaxVBI].
func AppendVBI(dst []byte, v int) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// ReadVBI decodes a variable byte integer from the start of b and returns its value and the
// number of bytes it used. n is 0 when b ends inside the integer. It rejects integers longer
// than four bytes and, per [MQTT-1.5.5-1], encodings that are not the shortest.
func ReadVBI(b []byte) (v, n int, err error) {
	shift := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		v |= int(c&0x7f) << shift
		if c < 0x80 {
			// [MQTT-1.5.5-1] The encoded value must use the minimum number of bytes: a
			// final zero byte after a continuation means a longer form than needed.
			if i > 0 && c == 0 {
				return 0, 0, errVBIForm
			}
			return v, i + 1, nil
		}
		if i == 3 {
			// A fourth byte that still continues already makes the integer too long; say
			// so now rather than wait for bytes that cannot help.
			return 0, 0, errLongVBI
		}
		shift += 7
	}
	return 0, 0, nil
}

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendU32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendString(dst []byte, s string) []byte {
	dst = appendU16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendBinary(dst []byte, b []byte) []byte {
	dst = appendU16(dst, uint16(len(b)))
	return append(dst, b...)
}

// appendHeader appends the fixed header: type and flags, then the Remaining Length.
func appendHeader(dst []byte, t Type, flags byte, remaining int) []byte {
	dst = append(dst, byte(t)<<4|flags)
	return AppendVBI(dst, remaining)
}

// wholeLen is the size of a packet whose body is remaining bytes long.
func wholeLen(remaining int) int { return 1 + VBILen(remaining) + remaining }

// checkUTF8 reports whether s is a valid MQTT UTF-8 string: well-formed UTF-8 with no
// surrogate code points [MQTT-1.5.4-1] and no U+0000 [MQTT-1.5.4-2]. The ASCII fast path
// matters: topics are checked on every inbound PUBLISH.
func checkUTF8(s string) *Error {
	for i := 0; i < len(s); {
		// Eight bytes at a time while they are ASCII and none is zero.
		for ; i+8 <= len(s); i += 8 {
			w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
				uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
			const lo, hi = 0x0101010101010101, 0x8080808080808080
			// The second term is non-zero exactly when some byte of w is zero.
			if w&hi != 0 || (w-lo)&^w&hi != 0 {
				break
			}
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c == 0 {
				return errNullChar
			}
			i++
			continue
		}
		// utf8.DecodeRuneInString rejects overlong forms and surrogates.
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return errUTF8
		}
		i += size
	}
	return nil
}

// ValidString checks a string the client is about to send: valid MQTT UTF-8 and at most
// 65535 bytes long.
func ValidString(s string) error {
	if len(s) > 0xFFFF {
		return ErrFieldTooLong
	}
	if checkUTF8(s) != nil {
		if !utf8.ValidString(s) {
			return ErrInvalidUTF8
		}
		return ErrNullChar
	}
	return nil
}

// decoder reads fields from a packet body. The first failure sticks: later reads return zero
// values, and the caller checks err once at the end.
type decoder struct {
	b     []byte
	off   int
	err   *Error
	alias bool // strings alias b instead of being copied
}

func (d *decoder) fail(e *Error) {
	if d.err == nil {
		d.err = e
	}
	d.off = len(d.b)
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) u8() byte {
	if d.off >= len(d.b) {
		d.fail(errShort)
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) u16() uint16 {
	if len(d.b)-d.off < 2 {
		d.fail(errShort)
		return 0
	}
	v := uint16(d.b[d.off])<<8 | uint16(d.b[d.off+1])
	d.off += 2
	return v
}

func (d *decoder) u32() uint32 {
	if len(d.b)-d.off < 4 {
		d.fail(errShort)
		return 0
	}
	b := d.b[d.off:]
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	d.off += 4
	return v
}

func (d *decoder) vbi() int {
	v, n, err := ReadVBI(d.b[d.off:])
	if err != nil {
		d.fail(err.(*Error))
		return 0
	}
	if n == 0 {
		d.fail(errShort)
		return 0
	}
	d.off += n
	return v
}

// binary reads two-byte-length-prefixed data. The result aliases the body.
func (d *decoder) binary() []byte {
	n := int(d.u16())
	if len(d.b)-d.off < n {
		d.fail(errShort)
		return nil
	}
	v := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return v
}

// bytes reads binary data, copying it unless the decoder aliases.
func (d *decoder) bytes() []byte {
	v := d.binary()
	if d.alias || v == nil {
		return v
	}
	return append([]byte{}, v...)
}

// str reads a UTF-8 string and validates it.
func (d *decoder) str() string {
	v := d.binary()
	if len(v) == 0 {
		return ""
	}
	var s string
	if d.alias {
		s = unsafe.String(&v[0], len(v))
	} else {
		s = string(v)
	}
	if err := checkUTF8(s); err != nil {
		d.fail(err)
		return ""
	}
	return s
}

// rest returns everything left in the body.
func (d *decoder) rest() []byte {
	v := d.b[d.off:len(d.b):len(d.b)]
	d.off = len(d.b)
	if !d.alias && len(v) > 0 {
		v = append([]byte{}, v...)
	}
	return v
}

// done records an error if bytes remain unread.
func (d *decoder) done() {
	if d.err == nil && d.off != len(d.b) {
		d.fail(errTrailing)
	}
}

// result converts the sticky error to an error interface without a typed-nil trap.
func (d *decoder) result() error {
	if d.err != nil {
		return d.err
	}
	return nil
}
