package filequeue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// Record types and the format version this code writes (see doc.go for the layout).
// Version 2 has the records of version 1; it marks a directory that keeps a manifest
// holding the sequence high-water mark, which version 1 code would not keep up to date, so
// that code refuses the directory (ErrVersion) instead of deleting segments unrecorded.
const (
	formatVersion byte = 2

	typeEntry byte = 1
	typeAck   byte = 2
)

// Fixed part of an entry: seq u64, time i64, qos u8, flags u8, payload format u8, expiry i64.
const (
	offSeq      = 0
	offTime     = 8
	entryFixed  = 8 + 8 + 1 + 1 + 1 + 8
	flagRetain  = 1 << 0
	ackPayload  = 8
	maxVarField = 1<<31 - 1
)

var errMalformed = errors.New("filequeue: malformed entry")

// hwm is the queue's value in the log's manifest: version u8 (1), reserved u64, floor u64.
type hwm struct {
	// reserved: no sequence number above it was ever handed out. Open resumes numbering
	// above it, so a lost tail cannot make a number come back.
	reserved uint64
	// floor: when segments were last removed, every entry up to here was acknowledged (or
	// lost and reported). Entries above it in segments missing at the front are lost.
	floor uint64
}

const (
	hwmVersion = 1
	hwmSize    = 1 + 8 + 8
)

func (h hwm) encode() []byte {
	b := make([]byte, 1, hwmSize)
	b[0] = hwmVersion
	b = binary.LittleEndian.AppendUint64(b, h.reserved)
	return binary.LittleEndian.AppendUint64(b, h.floor)
}

// decodeHWM reads a manifest value; a newer version than this code knows is refused
// rather than guessed at.
func decodeHWM(b []byte) (hwm, error) {
	switch {
	case len(b) == 0:
		return hwm{}, nil // no manifest yet, or one written before any value
	case b[0] > hwmVersion:
		return hwm{}, fmt.Errorf("%w: manifest value version %d; this code reads up to %d", ErrVersion, b[0], hwmVersion)
	case b[0] == 0 || len(b) < hwmSize:
		return hwm{}, errMalformed
	}
	return hwm{reserved: binary.LittleEndian.Uint64(b[1:]), floor: binary.LittleEndian.Uint64(b[9:])}, nil
}

// encodeEntry appends an entry with seq and time left zero; patchEntry fills them in
// under the queue's lock, so the order of sequence numbers is the order in the log.
func encodeEntry(dst []byte, m *tern.PublishOptions) []byte {
	dst = append(dst, make([]byte, 16)...) // seq, time
	var flags byte
	if m.Retain {
		flags |= flagRetain
	}
	dst = append(dst, m.QoS, flags, m.PayloadFormat)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.MessageExpiry))
	dst = appendString(dst, m.Topic)
	dst = appendString(dst, m.ContentType)
	dst = appendString(dst, m.ResponseTopic)
	dst = appendBytes(dst, m.CorrelationData)
	dst = binary.AppendUvarint(dst, uint64(len(m.UserProperties)))
	for _, up := range m.UserProperties {
		dst = appendString(dst, up.Key)
		dst = appendString(dst, up.Value)
	}
	return appendBytes(dst, m.Payload)
}

func patchEntry(b []byte, seq uint64, t time.Time) {
	binary.LittleEndian.PutUint64(b[offSeq:], seq)
	binary.LittleEndian.PutUint64(b[offTime:], uint64(t.UnixNano()))
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst []byte, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// entryHead returns the sequence number and enqueue time of an encoded entry.
func entryHead(b []byte) (uint64, int64, bool) {
	if len(b) < entryFixed {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[offSeq:]), int64(binary.LittleEndian.Uint64(b[offTime:])), true
}

// decoder walks an encoded entry; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) field() []byte {
	if d.err != nil {
		return nil
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > maxVarField || n > uint64(len(d.b)-k) {
		d.err = errMalformed
		return nil
	}
	f := d.b[k : k+int(n)]
	d.b = d.b[k+int(n):]
	return f
}

func (d *decoder) count() int {
	if d.err != nil {
		return 0
	}
	n, k := binary.Uvarint(d.b)
	// Each user property takes at least two bytes: a count above that is a lie.
	if k <= 0 || n > uint64(len(d.b)-k)/2 {
		d.err = errMalformed
		return 0
	}
	d.b = d.b[k:]
	return int(n)
}

// decodeEntry checks an encoded entry and, when e is not nil, fills it with copies of the
// fields (the entry's memory belongs to the caller). With e nil nothing is allocated.
func decodeEntry(b []byte, e *tern.QueueEntry) error {
	seq, nanos, ok := entryHead(b)
	if !ok {
		return errMalformed
	}
	d := decoder{b: b[entryFixed:]}
	qos, flags, format := b[16], b[17], b[18]
	expiry := time.Duration(binary.LittleEndian.Uint64(b[19:]))
	topic, ctype, rtopic, corr := d.field(), d.field(), d.field(), d.field()
	n := d.count()
	var props []packet.UserProperty
	if e != nil && n > 0 {
		props = make([]packet.UserProperty, n)
	}
	for i := range n {
		k, v := d.field(), d.field()
		if e != nil && d.err == nil {
			props[i] = packet.UserProperty{Key: string(k), Value: string(v)}
		}
	}
	payload := d.field()
	switch {
	case d.err != nil:
		return d.err
	case len(d.b) != 0:
		return errMalformed
	case e == nil:
		return nil
	}
	*e = tern.QueueEntry{
		Seq:  seq,
		Time: time.Unix(0, nanos),
		Message: tern.PublishOptions{
			Topic:           string(topic),
			Payload:         clone(payload),
			QoS:             qos,
			Retain:          flags&flagRetain != 0,
			PayloadFormat:   format,
			MessageExpiry:   expiry,
			ContentType:     string(ctype),
			ResponseTopic:   string(rtopic),
			CorrelationData: clone(corr),
			UserProperties:  props,
		},
	}
	return nil
}

// clone copies b, keeping nil for empty so a round trip gives back what was stored.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
