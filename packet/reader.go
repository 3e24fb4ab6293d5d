package packet

import (
	"io"
	"slices"
	"sync"
)

// Packet is implemented by every control packet type of this package.
type Packet interface {
	Type() Type
	// Len returns the size of the encoded packet in bytes.
	Len() int
	// AppendTo appends the encoded packet to dst and returns the extended slice.
	AppendTo(dst []byte) []byte
}

// Buffer is a pooled byte slice that holds one packet body. Get one with GetBuffer and give
// it back with Release exactly once; B must not be used after that.
type Buffer struct {
	B     []byte
	class int8 // index into pools, or -1 when the buffer is not pooled
}

// Size classes grow by four: 256 B, 1 KiB, ... 1 MiB. Larger bodies are allocated and left
// to the garbage collector so one huge packet does not pin memory in a pool.
const (
	minClassShift = 8
	numClasses    = 7
)

var pools [numClasses]sync.Pool

// GetBuffer returns a buffer with len(B) == n.
func GetBuffer(n int) *Buffer {
	for c := 0; c < numClasses; c++ {
		size := 1 << (minClassShift + 2*c)
		if n <= size {
			if b, ok := pools[c].Get().(*Buffer); ok {
				b.B = b.B[:n]
				return b
			}
			return &Buffer{B: make([]byte, n, size), class: int8(c)}
		}
	}
	return &Buffer{B: make([]byte, n), class: -1}
}

// Release returns the buffer to its pool. Under the race detector the bytes are overwritten
// first, so code that keeps an alias past Release reads garbage and fails loudly.
func (b *Buffer) Release() {
	if b == nil || b.class < 0 {
		return
	}
	if poisonReleased {
		full := b.B[:cap(b.B)]
		for i := range full {
			full[i] = 0xA5
		}
	}
	pools[b.class].Put(b)
}

// Frame is one packet read off the wire, not yet decoded. Body aliases a pooled buffer owned
// by the frame; call Release when neither the frame nor anything decoded from it (a Publish's
// topic and payload) is needed any more.
type Frame struct {
	Header byte // type in the upper four bits, flags in the lower four
	Body   []byte
	buf    *Buffer
}

// Type returns the packet type from the fixed header.
func (f *Frame) Type() Type { return Type(f.Header >> 4) }

// Flags returns the low four bits of the fixed header.
func (f *Frame) Flags() byte { return f.Header & 0x0F }

// Release gives the body's buffer back to the pool. It is safe to call more than once.
func (f *Frame) Release() {
	f.buf.Release()
	f.buf = nil
	f.Body = nil
}

// Detach hands the frame's buffer to the caller, who must Release it, and leaves the frame
// without one. Use it to keep a decoded Publish alive past the read loop.
func (f *Frame) Detach() *Buffer {
	b := f.buf
	f.buf = nil
	return b
}

// Reader reads packets from a byte stream. It is not safe for concurrent use.
type Reader struct {
	br  *readBuf
	max int
	// over describes the packet ReadFrame last refused with ErrTooLarge, whose body is
	// still unread (SkipTooLarge); zero otherwise.
	over struct {
		header byte
		body   int
	}
}

// NewReader returns a Reader that buffers r with a buffer of size bytes (at least 16) and
// accepts packets of up to MaxPacketSize bytes; see SetMaxPacketSize.
//
// The size-byte buffer is held only while traffic flows: it is taken from a pool when a read
// fills the Reader's 512-byte buffer and given back when a read brings less than that, so a
// Reader waiting on a quiet connection holds 512 bytes. Switching costs a pool Get or Put,
// no allocation.
func NewReader(r io.Reader, size int) *Reader {
	return &Reader{br: newReadBuf(r, size), max: MaxPacketSize}
}

// SetMaxPacketSize sets the largest whole packet the reader accepts. A larger packet is
// refused before its body is read or any memory is allocated for it. n <= 0 means the
// protocol's own limit.
func (r *Reader) SetMaxPacketSize(n int) {
	if n <= 0 || n > MaxPacketSize {
		n = MaxPacketSize
	}
	r.max = n
}

// Buffered returns how many bytes are read from the stream but not yet returned.
func (r *Reader) Buffered() int { return r.br.buffered() }

// FrameBuffered reports whether a whole packet is already buffered, so that the next
// ReadFrame returns without reading from the stream (and so without blocking). A caller
// that batches work across packets ends its batch when it returns false. Cost: a peek at
// the fixed header, no read.
func (r *Reader) FrameBuffered() bool {
	n := r.br.buffered()
	if n < 2 {
		return false
	}
	b := r.br.peek(5)
	rl := 0
	for i := 1; i < len(b); i++ {
		rl |= int(b[i]&0x7F) << (7 * (i - 1))
		if b[i] < 0x80 {
			return 1+i+rl <= n
		}
	}
	return false
}

// ReadFrame reads the next packet. The error is io.EOF only on a clean end of stream before
// a packet starts; a stream that ends inside a packet gives io.ErrUnexpectedEOF.
func (r *Reader) ReadFrame() (Frame, error) {
	r.over.header = 0
	h, err := r.br.ReadByte()
	if err != nil {
		return Frame{}, err
	}
	if h>>4 == 0 {
		return Frame{}, errBadType
	}
	rl, n := 0, 0
	for shift := 0; ; shift += 7 {
		c, err := r.br.ReadByte()
		if err != nil {
			return Frame{}, unexpected(err)
		}
		n++
		rl |= int(c&0x7F) << shift
		if c < 0x80 {
			if n > 1 && c == 0 {
				return Frame{}, errVBIForm
			}
			break
		}
		if n == 4 {
			return Frame{}, errLongVBI
		}
	}
	if 1+n+rl > r.max {
		r.over.header, r.over.body = h, rl
		return Frame{}, ErrTooLarge
	}
	f := Frame{Header: h}
	if rl == 0 {
		return f, nil
	}
	if rl > maxPooled {
		// A declared length is only a claim: grow the body as its bytes arrive, so a peer
		// cannot make us commit hundreds of megabytes with five bytes.
		body, err := readGrowing(r.br, rl)
		if err != nil {
			return Frame{}, unexpected(err)
		}
		f.buf = &Buffer{B: body, class: -1}
		f.Body = body
		return f, nil
	}
	f.buf = GetBuffer(rl)
	f.Body = f.buf.B
	if _, err := io.ReadFull(r.br, f.Body); err != nil {
		f.Release()
		return Frame{}, unexpected(err)
	}
	return f, nil
}

// maxPooled is the largest body size the pools serve.
const maxPooled = 1 << (minClassShift + 2*(numClasses-1))

// readGrowing reads n bytes into a buffer that doubles as data arrives.
func readGrowing(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, 0, maxPooled)
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(cap(b), n-len(b)))
		}
		m, err := r.Read(b[len(b):min(cap(b), n)])
		b = b[:len(b)+m]
		if err != nil && len(b) < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return b, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Decode decodes a frame into a new packet of the frame's type. A decoded Publish aliases the
// frame's body; every other type copies what it keeps.
func Decode(f *Frame) (Packet, error) {
	flags := f.Flags()
	switch t := f.Type(); t {
	case CONNECT:
		p := new(Connect)
		return p, p.Decode(flags, f.Body)
	case CONNACK:
		p := new(Connack)
		return p, p.Decode(flags, f.Body)
	case PUBLISH:
		p := new(Publish)
		return p, p.Decode(flags, f.Body)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		p := new(Ack)
		return p, p.Decode(t, flags, f.Body)
	case SUBSCRIBE:
		p := new(Subscribe)
		return p, p.Decode(flags, f.Body)
	case SUBACK:
		p := new(Suback)
		return p, p.Decode(flags, f.Body)
	case UNSUBSCRIBE:
		p := new(Unsubscribe)
		return p, p.Decode(flags, f.Body)
	case UNSUBACK:
		p := new(Unsuback)
		return p, p.Decode(flags, f.Body)
	case PINGREQ, PINGRESP:
		if flags != 0 {
			return nil, errFlags
		}
		if len(f.Body) != 0 {
			return nil, errPingBody
		}
		if t == PINGREQ {
			return &Pingreq{}, nil
		}
		return &Pingresp{}, nil
	case DISCONNECT:
		p := new(Disconnect)
		return p, p.Decode(flags, f.Body)
	case AUTH:
		p := new(Auth)
		return p, p.Decode(flags, f.Body)
	}
	return nil, errBadType
}

// DecodeBytes decodes one whole packet from b, which must hold exactly one packet. The result
// may alias b (see Decode).
func DecodeBytes(b []byte) (Packet, error) {
	f, err := splitFrame(b)
	if err != nil {
		return nil, err
	}
	return Decode(&f)
}

// splitFrame checks that b holds exactly one packet and returns it as a frame aliasing b.
func splitFrame(b []byte) (Frame, error) {
	if len(b) < 2 {
		return Frame{}, errShort
	}
	if b[0]>>4 == 0 {
		return Frame{}, errBadType
	}
	rl, n, err := ReadVBI(b[1:])
	if err != nil {
		return Frame{}, err
	}
	if n == 0 || len(b[1+n:]) < rl {
		return Frame{}, errShort
	}
	if len(b[1+n:]) > rl {
		return Frame{}, errTrailing
	}
	return Frame{Header: b[0], Body: b[1+n:]}, nil
}
