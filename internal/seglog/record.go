package seglog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// A record on disk:
//
//	[len u32][crc u32][version u8][type u8][payload ...]
//
// Integers are little endian. len counts the bytes after the crc (version, type, payload),
// so it is at least 2; crc is CRC-32C (Castagnoli) of those same bytes. The header is
// headerSize bytes; the smallest record is headerSize+2 bytes.
const (
	headerSize = 8
	// minLen is the smallest valid len field: a version and a type, no payload.
	minLen = 2
)

// Types at or above TypeReserved belong to the log itself and are never passed to Replay.
const (
	TypeReserved byte = 0xF0
	// typeCheckpoint opens a segment written by Compact: every older segment is obsolete.
	// Its payload is the segment's own ordinal, u64.
	typeCheckpoint byte = 0xFF
	// typeManifest is the one record of the MANIFEST file (manifest.go), never in a segment.
	typeManifest byte = 0xFE
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// RecordSize returns the bytes a record with this payload takes on disk.
func RecordSize(payloadLen int) int { return headerSize + minLen + payloadLen }

// appendRecord appends one encoded record to dst.
func appendRecord(dst []byte, version, typ byte, payload []byte) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(minLen+len(payload)))
	dst = append(dst, 0, 0, 0, 0, version, typ)
	dst = append(dst, payload...)
	crc := crc32.Checksum(dst[start+headerSize:], castagnoli)
	binary.LittleEndian.PutUint32(dst[start+4:], crc)
	return dst
}

// Pos is where a record starts: the segment's ordinal and the byte offset in it.
type Pos struct {
	Seg uint64
	Off int64
}

func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Seg, p.Off) }

// Record is one record read back.
type Record struct {
	Pos     Pos
	Size    int64 // bytes on disk, header included
	Version byte
	Type    byte
	Payload []byte // valid until the next read from the same Reader or the end of Replay
}

// Corruption describes bytes the log could not read and skipped, or a segment file that
// should be there and is not.
type Corruption struct {
	Segment uint64 // ordinal of the segment
	Path    string // its file
	Offset  int64  // where the unreadable bytes start
	Length  int64  // how many bytes were skipped or truncated; 0 for a missing segment
	Reason  string
}

func (c Corruption) String() string {
	return fmt.Sprintf("%s at offset %d (%d bytes): %s", c.Path, c.Offset, c.Length, c.Reason)
}

// scanner reads records from one segment file through a window buffer, so a segment is
// never held in memory whole: only the largest record is.
type scanner struct {
	f      io.ReaderAt
	buf    []byte // window: file bytes [bufOff, bufOff+len(buf))
	bufOff int64
	maxLen int64 // largest valid len field
	maxVer byte  // newest version this code writes; newer records still parse
}

const windowSize = 64 << 10

func (s *scanner) reset(f io.ReaderAt) {
	s.f = f
	s.buf = s.buf[:0]
	s.bufOff = 0
}

// window returns file bytes [off, off+n); the caller has checked they exist (below limit).
func (s *scanner) window(off int64, n int) ([]byte, error) {
	if off >= s.bufOff && off+int64(n) <= s.bufOff+int64(len(s.buf)) {
		i := off - s.bufOff
		return s.buf[i : i+int64(n)], nil
	}
	want := max(n, windowSize)
	if cap(s.buf) < want {
		s.buf = make([]byte, want)
	}
	s.buf = s.buf[:want]
	m, err := s.f.ReadAt(s.buf, off)
	s.buf, s.bufOff = s.buf[:m], off
	if m < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return s.buf[:n], nil
}

// shrink drops a window grown for a large record, so one big message does not pin memory.
func (s *scanner) shrink() {
	if cap(s.buf) > 4*windowSize {
		s.buf, s.bufOff = nil, 0
	}
}

// parse checks the record at off, which must end by limit. A non-empty reason says why it
// is not a valid record; err is an I/O error.
func (s *scanner) parse(off, limit int64) (rec Record, reason string, err error) {
	if limit-off < headerSize+minLen {
		return rec, "truncated header", nil
	}
	hdr, err := s.window(off, headerSize)
	if err != nil {
		return rec, "", err
	}
	n := int64(binary.LittleEndian.Uint32(hdr))
	sum := binary.LittleEndian.Uint32(hdr[4:])
	switch {
	case n < minLen || n > s.maxLen:
		return rec, fmt.Sprintf("impossible length %d", n), nil
	case off+headerSize+n > limit:
		return rec, fmt.Sprintf("length %d runs past the end", n), nil
	}
	body, err := s.window(off+headerSize, int(n))
	if err != nil {
		return rec, "", err
	}
	if crc32.Checksum(body, castagnoli) != sum {
		return rec, "checksum mismatch", nil
	}
	if body[0] == 0 {
		return rec, "version 0", nil
	}
	return Record{Size: headerSize + n, Version: body[0], Type: body[1], Payload: body[2:]}, "", nil
}

// plausible is a cheap filter before parse while resynchronising: a header whose length fits
// and whose version is one this code knows. Most garbage fails here without a checksum.
func (s *scanner) plausible(off, limit int64) (bool, error) {
	if limit-off < headerSize+minLen {
		return false, nil
	}
	hdr, err := s.window(off, headerSize+1)
	if err != nil {
		return false, err
	}
	n := int64(binary.LittleEndian.Uint32(hdr))
	v := hdr[headerSize]
	return n >= minLen && n <= s.maxLen && off+headerSize+n <= limit && v >= 1 && v <= s.maxVer, nil
}

// badRegion is a run of bytes that holds no valid record.
type badRegion struct {
	off, end int64
	reason   string
}

// next returns the record at off, or, when off does not start one, the bad region from off
// to the next offset where a valid record parses (limit if none does). It always makes
// progress: a bad region is at least one byte long.
func (s *scanner) next(off, limit int64) (Record, *badRegion, error) {
	rec, reason, err := s.parse(off, limit)
	if err != nil {
		return rec, nil, err
	}
	if reason == "" {
		return rec, nil, nil
	}
	bad := &badRegion{off: off, end: limit, reason: reason}
	for p := off + 1; p < limit; p++ {
		ok, err := s.plausible(p, limit)
		if err != nil {
			return rec, nil, err
		}
		if !ok {
			continue
		}
		if _, why, err := s.parse(p, limit); err != nil {
			return rec, nil, err
		} else if why == "" {
			bad.end = p
			break
		}
	}
	return rec, bad, nil
}
