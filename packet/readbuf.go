package packet

import (
	"errors"
	"io"
	"sync"
	"time"
)

// smallReadSize is the buffer a Reader waits for the network with while traffic is light:
// enough for acknowledgements, PINGRESP and small messages one read at a time. It is all an
// idle connection holds.
const smallReadSize = 512

// largeHold is how long the large buffer is kept after the last read that brought at least
// smallReadSize bytes: traffic that comes and goes within it does not make the reader
// switch buffers (and pay a pool round trip and an extra read) at every lull.
var largeHold = time.Second

// readBuf is the Reader's buffered source. It reads through a small buffer of its own while
// reads bring little, and through a large pooled one (size bytes) while they bring a lot:
// the large one is taken when a read fills the small buffer and given back when a read
// into it brings less than smallReadSize and none brought more for largeHold. The choice is
// made only when the buffer is empty, so no byte moves between buffers. A read that brings
// little costs one system call with either buffer, which is why light traffic loses nothing
// by the small one. Cost: one clock reading per read that brings smallReadSize or more.
type readBuf struct {
	src   io.Reader
	small []byte
	large *[]byte    // taken from pool while traffic flows; nil otherwise
	pool  *sync.Pool // of *[]byte of size bytes; nil when size <= smallReadSize
	buf   []byte     // small or *large: the bytes buffered are buf[r:w]
	r, w  int
	last  int       // bytes brought by the last fill
	busy  time.Time // when a fill last brought smallReadSize bytes or more (pool != nil)
	err   error     // sticky read error, returned once the buffered bytes are consumed
}

// errBadCount reports a source that broke the io.Reader contract.
var errBadCount = errors.New("packet: source returned an invalid byte count")

// readPools holds one pool of large read buffers per size (int → *sync.Pool).
var readPools sync.Map

func newReadBuf(src io.Reader, size int) *readBuf {
	size = max(size, 16)
	b := &readBuf{src: src, small: make([]byte, min(size, smallReadSize))}
	b.buf = b.small
	if size > smallReadSize {
		p, ok := readPools.Load(size)
		if !ok {
			p, _ = readPools.LoadOrStore(size, &sync.Pool{New: func() any {
				s := make([]byte, size)
				return &s
			}})
		}
		b.pool = p.(*sync.Pool)
	}
	return b
}

// buffered returns how many bytes are read from the source but not yet consumed.
func (b *readBuf) buffered() int { return b.w - b.r }

// fill reads into the empty buffer, first choosing which buffer by the last read's size.
func (b *readBuf) fill() error {
	if b.err != nil {
		return b.readErr()
	}
	b.choose()
	b.r, b.w = 0, 0
	// Like bufio: a source that keeps returning nothing is broken, not slow.
	for i := 0; i < 100; i++ {
		n, err := b.src.Read(b.buf)
		if n < 0 || n > len(b.buf) {
			n, err = 0, errBadCount
		}
		b.w, b.last = n, n
		if n >= len(b.small) && b.pool != nil {
			b.busy = time.Now()
		}
		if err != nil {
			b.err = err
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return b.readErr()
		}
	}
	b.err = io.ErrNoProgress
	return b.readErr()
}

// choose switches between the small and the large buffer; the buffer must be empty.
func (b *readBuf) choose() {
	switch {
	case b.pool == nil:
	case b.large == nil && b.last == len(b.small):
		b.large = b.pool.Get().(*[]byte)
		b.buf = *b.large
	case b.large != nil && b.last < len(b.small) && time.Since(b.busy) >= largeHold:
		b.pool.Put(b.large)
		b.large = nil
		b.buf = b.small
	}
}

// readErr returns the pending error once, like bufio: a caller may retry after a timeout.
func (b *readBuf) readErr() error {
	err := b.err
	b.err = nil
	return err
}

func (b *readBuf) ReadByte() (byte, error) {
	if b.r == b.w {
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	c := b.buf[b.r]
	b.r++
	return c, nil
}

// Read reads up to len(p) bytes: buffered ones first; a read at least as large as the buffer
// goes straight into p.
func (b *readBuf) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		if b.err != nil {
			return 0, b.readErr()
		}
		if len(p) >= len(b.buf) {
			n, err := b.src.Read(p)
			if n < 0 || n > len(p) {
				return 0, errBadCount
			}
			return n, err
		}
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// peek returns up to n of the buffered bytes without consuming them and without reading
// from the source. The slice is valid until the next read.
func (b *readBuf) peek(n int) []byte {
	return b.buf[b.r : b.r+min(n, b.w-b.r)]
}
