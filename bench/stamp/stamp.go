// Package stamp writes and checks the payloads of the side-by-side benchmarks, so every run
// can prove that each message arrived exactly once and intact.
//
// A payload of Size bytes is laid out as
//
//	[0:4)        magic "TBM1"
//	[4:8)        run identifier, big endian
//	[8:16)       sequence number, big endian
//	[16:24)      send time in Unix nanoseconds (0 when unused)
//	[24:Size-8)  filler that depends only on the position
//	[Size-8:)    the sequence number again
//
// A receiver knows Size, the run and how many messages to expect, so it can tell a torn
// payload (wrong length, magic, filler or trailer), a message of another run or out of range
// (unknown), a duplicate and, at the end, what is missing. Stamping a reused buffer rewrites
// only the 24-byte header and the 8-byte trailer, so a 64 KiB payload costs the same to stamp
// as a 64 B one.
package stamp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Header and trailer sizes; a payload must be at least MinSize bytes.
const (
	headerLen  = 24
	trailerLen = 8
	// MinSize is the smallest payload that leaves room for some filler.
	MinSize = headerLen + trailerLen + 8
)

var magic = [4]byte{'T', 'B', 'M', '1'}

// Format describes the payloads of one run.
type Format struct {
	Run  uint32
	Size int

	template []byte // a whole payload with a zero header and trailer
}

// NewFormat returns the format for payloads of size bytes in run.
func NewFormat(run uint32, size int) (*Format, error) {
	if size < MinSize {
		return nil, fmt.Errorf("stamp: payload size %d below the minimum %d", size, MinSize)
	}
	f := &Format{Run: run, Size: size, template: make([]byte, size)}
	copy(f.template, magic[:])
	binary.BigEndian.PutUint32(f.template[4:], run)
	for i := headerLen; i < size-trailerLen; i++ {
		f.template[i] = filler(i)
	}
	return f, nil
}

func filler(i int) byte { return byte(i*7 + 13) }

// New returns a fresh payload buffer holding the filler; Stamp it before each use.
func (f *Format) New() []byte { return bytes.Clone(f.template) }

// Stamp writes seq and the send time ts (Unix nanoseconds, or 0) into a buffer made by New.
func (f *Format) Stamp(buf []byte, seq uint64, ts int64) {
	binary.BigEndian.PutUint64(buf[8:], seq)
	binary.BigEndian.PutUint64(buf[16:], uint64(ts))
	binary.BigEndian.PutUint64(buf[len(buf)-trailerLen:], seq)
}

// Errors of Parse.
var (
	ErrTorn    = errors.New("stamp: torn payload")
	ErrForeign = errors.New("stamp: payload of another run")
)

// Parse checks p against the format and returns its sequence number and send time.
func (f *Format) Parse(p []byte) (seq uint64, ts int64, err error) {
	if len(p) != f.Size || !bytes.Equal(p[:4], magic[:]) {
		return 0, 0, ErrTorn
	}
	if binary.BigEndian.Uint32(p[4:]) != f.Run {
		return 0, 0, ErrForeign
	}
	seq = binary.BigEndian.Uint64(p[8:])
	if binary.BigEndian.Uint64(p[len(p)-trailerLen:]) != seq ||
		!bytes.Equal(p[headerLen:len(p)-trailerLen], f.template[headerLen:len(p)-trailerLen]) {
		return 0, 0, ErrTorn
	}
	return seq, int64(binary.BigEndian.Uint64(p[16:])), nil
}

// Counts is what a Checker saw.
type Counts struct {
	Expected   uint64 `json:"expected"`
	Unique     uint64 `json:"unique"`
	Duplicates uint64 `json:"duplicates"`
	Torn       uint64 `json:"torn"`
	Unknown    uint64 `json:"unknown"` // another run, or a sequence number out of range
}

// Missing is how many expected messages never arrived.
func (c Counts) Missing() uint64 { return c.Expected - c.Unique }

// Verdict returns nil when every message arrived exactly once and intact. Duplicates are
// tolerated when allowDup is set (QoS 1 after a cut may legitimately deliver twice).
func (c Counts) Verdict(allowDup bool) error {
	var errs []error
	if m := c.Missing(); m > 0 {
		errs = append(errs, fmt.Errorf("%d of %d missing", m, c.Expected))
	}
	if c.Duplicates > 0 && !allowDup {
		errs = append(errs, fmt.Errorf("%d duplicates", c.Duplicates))
	}
	if c.Torn > 0 {
		errs = append(errs, fmt.Errorf("%d torn", c.Torn))
	}
	if c.Unknown > 0 {
		errs = append(errs, fmt.Errorf("%d unknown", c.Unknown))
	}
	return errors.Join(errs...)
}

// Checker records the sequence numbers of the messages received in one run: 0 to n-1, each
// expected once. It allocates nothing per message and is safe for concurrent use.
type Checker struct {
	f    *Format
	mu   sync.Mutex
	seen []uint64 // bitmap by sequence number
	c    Counts
	last time.Time // when the last new message arrived
}

// NewChecker expects n messages of format f.
func NewChecker(f *Format, n int) *Checker {
	return &Checker{f: f, seen: make([]uint64, (n+63)/64), c: Counts{Expected: uint64(n)}}
}

// Check records one received payload. It returns the payload's send time when the message
// was new (1 when it carried none), and 0 when it was not counted as new.
func (k *Checker) Check(p []byte) (ts int64) {
	seq, ts, err := k.f.Parse(p)
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case errors.Is(err, ErrTorn):
		k.c.Torn++
		return 0
	case err != nil || seq >= k.c.Expected:
		k.c.Unknown++
		return 0
	}
	w, bit := seq/64, uint64(1)<<(seq%64)
	if k.seen[w]&bit != 0 {
		k.c.Duplicates++
		return 0
	}
	k.seen[w] |= bit
	k.c.Unique++
	k.last = time.Now()
	if ts == 0 {
		ts = 1 // counted: callers test for non-zero
	}
	return ts
}

// Done reports whether every expected message has arrived.
func (k *Checker) Done() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c.Unique == k.c.Expected
}

// Counts returns what the checker has seen so far and when the last new message arrived.
func (k *Checker) Counts() (Counts, time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c, k.last
}
