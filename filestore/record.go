package filestore

import (
	"encoding/binary"
	"errors"

	"github.com/ternmq/tern"
)

// Record types and the format version this code writes (see doc.go for the layout).
const (
	formatVersion byte = 1

	typePut    byte = 1
	typeDelete byte = 2
	typeReset  byte = 3
)

// put layout: kind u8, id u16, seq u64, time i64 (Unix ns), packet bytes to the end.
const (
	putFixed   = 1 + 2 + 8 + 8
	offSeq     = 3
	offTime    = 11
	deleteSize = 3
)

var errMalformed = errors.New("filestore: malformed record")

func validKind(k tern.RecordKind) bool {
	return k == tern.RecordPublish || k == tern.RecordReleased || k == tern.RecordInbound
}

// put is a decoded put record; packet aliases the record's payload.
type put struct {
	kind   tern.RecordKind
	id     uint16
	seq    uint64
	time   int64
	packet []byte
}

func appendPut(dst []byte, p *put) []byte {
	dst = append(dst, byte(p.kind))
	dst = binary.LittleEndian.AppendUint16(dst, p.id)
	dst = binary.LittleEndian.AppendUint64(dst, p.seq)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(p.time))
	return append(dst, p.packet...)
}

// patchPut sets seq and time in an encoded put, under the store's lock.
func patchPut(b []byte, seq uint64, t int64) {
	binary.LittleEndian.PutUint64(b[offSeq:], seq)
	binary.LittleEndian.PutUint64(b[offTime:], uint64(t))
}

func decodePut(b []byte) (put, error) {
	if len(b) < putFixed || !validKind(tern.RecordKind(b[0])) {
		return put{}, errMalformed
	}
	return put{
		kind:   tern.RecordKind(b[0]),
		id:     binary.LittleEndian.Uint16(b[1:]),
		seq:    binary.LittleEndian.Uint64(b[offSeq:]),
		time:   int64(binary.LittleEndian.Uint64(b[offTime:])),
		packet: b[putFixed:],
	}, nil
}

func appendDelete(dst []byte, kind tern.RecordKind, id uint16) []byte {
	dst = append(dst, byte(kind))
	return binary.LittleEndian.AppendUint16(dst, id)
}

func decodeDelete(b []byte) (tern.RecordKind, uint16, error) {
	if len(b) != deleteSize || !validKind(tern.RecordKind(b[0])) {
		return 0, 0, errMalformed
	}
	return tern.RecordKind(b[0]), binary.LittleEndian.Uint16(b[1:]), nil
}
