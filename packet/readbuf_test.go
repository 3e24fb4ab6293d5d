package packet

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// scriptedSource hands out one chunk per Read (as much of it as fits) and records the size
// of the buffer each Read was given.
type scriptedSource struct {
	chunks [][]byte
	sizes  []int
}

func (s *scriptedSource) Read(p []byte) (int, error) {
	s.sizes = append(s.sizes, len(p))
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	if s.chunks[0] = s.chunks[0][n:]; len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

// An idle Reader waits for the network with its small buffer only: the large one is taken
// when a read fills the small one (traffic flows) and given back once a read brings less
// than the small buffer holds, so an idle connection costs smallReadSize, not size, of heap
// (the per-connection target of PRODUCT.md: at most 32 KiB per idle client).
func TestReaderBufferGrowsAndShrinks(t *testing.T) {
	defer func(h time.Duration) { largeHold = h }(largeHold)
	largeHold = 0 // this test does not wait for it: see TestReaderBufferHeldThroughLulls
	const size = 32 << 10
	pingresp := []byte{0xD0, 0}
	var burst []byte
	for len(burst) < 3*size {
		burst = append(burst, 0x30, 5, 0, 1, 't', 'x', 'y') // PUBLISH QoS 0
	}
	src := &scriptedSource{chunks: [][]byte{pingresp, burst, pingresp, pingresp}}
	r := NewReader(src, size)
	frames := 0
	for {
		f, err := r.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		f.Release()
		frames++
	}
	if want := 3 + len(burst)/7; frames != want {
		t.Fatalf("read %d frames, want %d", frames, want)
	}
	s := src.sizes
	// The first read (CONNACK's place on a connection) and the one after a small read use the
	// small buffer; the burst is read in large reads once the small buffer came back full.
	if s[0] > smallReadSize {
		t.Errorf("first read given %d bytes, want at most %d", s[0], smallReadSize)
	}
	large := 0
	for _, n := range s {
		if n == size {
			large++
		}
	}
	if large < 3 {
		t.Errorf("burst read with %d large reads (sizes %v)", large, s)
	}
	// The last reads follow a 2-byte read: the reader waits with the small buffer.
	for _, n := range s[len(s)-2:] {
		if n > smallReadSize {
			t.Errorf("read after a quiet one given %d bytes, want at most %d (sizes %v)", n, smallReadSize, s)
		}
	}
}

// Switching buffers never loses or reorders bytes, whatever the read sizes.
func TestReaderBufferSwitchKeepsBytes(t *testing.T) {
	t.Parallel()
	stream, want := readerStream()
	var chunks [][]byte
	var all []byte
	for i := 0; i < 200; i++ {
		all = append(all, stream...)
	}
	// Alternate tiny, exact-small, and large chunks to force every switch.
	for rest, i := all, 0; len(rest) > 0; i++ {
		n := []int{1, smallReadSize, 3 * smallReadSize, 7, smallReadSize - 1, 5000}[i%6]
		n = min(n, len(rest))
		chunks = append(chunks, rest[:n])
		rest = rest[n:]
	}
	r := NewReader(&scriptedSource{chunks: chunks}, 4096)
	for i := 0; i < 200*len(want); i++ {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		w := want[i%len(want)]
		if f.Header != w.Header || !bytes.Equal(f.Body, w.Body) {
			t.Fatalf("frame %d = %#x % X, want %#x % X", i, f.Header, f.Body, w.Header, w.Body)
		}
		f.Release()
	}
	if _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
}

// Reading frames once the large buffer is in use allocates nothing.
func TestReaderSteadyStateNoAlloc(t *testing.T) {
	frame := []byte{0x30, 5, 0, 1, 't', 'x', 'y'}
	src := &cycle{b: frame}
	r := NewReader(src, 32<<10)
	for i := 0; i < 10000; i++ { // warm up: take the large buffer
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		f.Release()
	}
	allocs := testing.AllocsPerRun(1000, func() {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		f.Release()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
}

// A lull shorter than largeHold keeps the large buffer: traffic that pauses between bursts
// does not pay a buffer switch and an extra read at every pause.
func TestReaderBufferHeldThroughLulls(t *testing.T) {
	const size = 32 << 10
	pingresp := []byte{0xD0, 0}
	var burst []byte
	for len(burst) < 2*size {
		burst = append(burst, 0x30, 5, 0, 1, 't', 'x', 'y')
	}
	src := &scriptedSource{chunks: [][]byte{burst, pingresp, pingresp, burst}}
	r := NewReader(src, size)
	for {
		f, err := r.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		f.Release()
	}
	// Reads: small (fills), then large ones; the two quiet reads come well within
	// largeHold of the burst, so every read after the first is given the large buffer.
	for i, n := range src.sizes[1:] {
		if n != size {
			t.Fatalf("read %d given %d bytes within largeHold of a burst (sizes %v)", i+1, n, src.sizes)
		}
	}
}
