package tern

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// startedPacer returns a running pacer on c, or skips where the system has none.
func startedPacer(t *testing.T, c net.Conn) *readPacer {
	t.Helper()
	p := newReadPacer(c, DefaultReadCoalescing)
	if p == nil {
		t.Skip("no read coalescing on this system")
	}
	p.start()
	return p
}

// pattern is the byte at offset i of a test stream.
func pattern(i int) byte { return byte(i*7 + i>>8) }

// readFull reads len(b) bytes through p, as the client's packet reader does (reads of 32 KiB
// at most, never asking for less than what may be waiting), and returns the highest mark p
// had after a read. The peer must send exactly len(b) bytes before it waits for us.
func readFull(t *testing.T, p *readPacer, b []byte) (maxMark int) {
	t.Helper()
	buf := make([]byte, 32<<10)
	for off := 0; off < len(b); {
		n, err := p.Read(buf)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if off+n > len(b) {
			t.Fatalf("read %d bytes at %d of %d: more than the peer sent", n, off, len(b))
		}
		off += copy(b[off:], buf[:n])
		maxMark = max(maxMark, p.mark)
	}
	return maxMark
}

// A fast stream raises the mark and arrives intact; once the stream stops, the bytes that
// do not fill the mark are still read (the wait ends at its deadline), and the pacer is back
// to reading every packet as it comes, with no deadline of its own left behind.
func TestReadPacerFastStreamThenLastPacket(t *testing.T) {
	c, s := tcpPair(t)
	p := startedPacer(t, c)
	const chunk, chunks = 80, 20000
	go func() {
		b := make([]byte, chunk)
		for i := range chunks {
			for j := range b {
				b[j] = pattern(i*chunk + j)
			}
			if _, err := s.Write(b); err != nil {
				return
			}
		}
	}()
	got := make([]byte, chunk*chunks)
	maxMark := readFull(t, p, got)
	for i, v := range got {
		if v != pattern(i) {
			t.Fatalf("byte %d: got %d, want %d", i, v, pattern(i))
		}
	}
	if maxMark < paceMinMark {
		t.Fatalf("the mark never rose under a stream of %d writes (highest %d)", chunks, maxMark)
	}

	// With the mark up, send less than it. A read that finds it already there returns it at
	// once; one that waits for the mark ends at its deadline and reads it, and leaves the
	// mark off and no deadline of its own behind. Repeat until the second case has happened.
	b := make([]byte, 64)
	reading := make(chan struct{}, 1)
	p.waiting = func() { reading <- struct{}{} }
	for i, before := 0, p.expired; p.expired == before; i++ {
		if i == 50 {
			t.Fatal("no read waited for the mark in 50 tries")
		}
		if err := p.setLW(paceMaxMark); err != nil {
			t.Fatal(err)
		}
		p.mark = paceMaxMark
		// Keep the pacer from backing off: each try stands alone, a pause in a stream.
		p.hits = paceMinHits
		got := make(chan string, 1)
		go func() {
			n, err := p.Read(b)
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(b[:n])
		}()
		<-reading // the read is about to look: most often it waits before the packet comes
		if _, err := s.Write([]byte("last!")); err != nil {
			t.Fatal(err)
		}
		if v := <-got; v != "last!" {
			t.Fatalf("try %d: read %q, want the last packet", i, v)
		}
	}
	if p.mark != 1 || p.armed {
		t.Fatalf("after the deadline: mark %d, deadline armed %v; want off", p.mark, p.armed)
	}
}

// A peer that sends a window and then waits for our answer before it sends more (a full
// Receive Maximum window) must not cost a deadline per window: the mark goes off for quiet
// periods that double, so the deadlines are at most two per back-off (backOffs).
func TestReadPacerPeerWaitsForUs(t *testing.T) {
	c, s := tcpPair(t)
	p := startedPacer(t, c)
	var sends atomic.Uint64 // as the client's writer counts its writes
	p.sends = &sends

	const window, windows = 8 << 10, 300
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// A fast stream first, so that the mark is high when the windows begin.
		if _, err := s.Write(make([]byte, 256<<10)); err != nil {
			return
		}
		one := make([]byte, 1)
		pkt := make([]byte, 80)
		for range windows {
			for sent := 0; sent < window; sent += len(pkt) {
				if _, err := s.Write(pkt); err != nil {
					return
				}
			}
			if _, err := io.ReadFull(s, one); err != nil {
				return
			}
		}
	}()
	w := make([]byte, ((window+79)/80)*80) // what the peer sends per window
	start := time.Now()
	for i := range windows {
		if i == 0 {
			readFull(t, p, make([]byte, 256<<10+len(w))) // the fast stream, then the first window
		} else {
			readFull(t, p, w)
		}
		sends.Add(1)
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatalf("window %d: %v", i, err)
		}
	}
	wg.Wait()
	// Two per back-off: a window may fill the mark often enough for its tail's deadline to
	// pass for a pause in a stream, the next one backs off.
	t.Logf("%d windows, %d waits to the deadline, %d judged pauses, %d learned, %d filled waits, level %d", windows, p.expired, p.resumed, p.learns, p.paid, p.level)
	// A deadline the peer's next bytes followed before our write was a pause of the peer
	// within a window (a slow writer), not a wait for us: each halves the marks after it.
	// Each learned window follows paceMinHits filled waits (or is the first), each narrowing
	// a window learned (checkLearns); once the marks
	// are below the windows, each window fills one, and a deadline after paceMinHits of them is
	// a pause the stream paid for.
	bound := 2 * backOffs(time.Since(start))
	if waited := p.expired - p.resumed - p.learns - p.narrows - p.paid/paceMinHits; waited > bound {
		t.Fatalf("%d of %d windows waited for the deadline and then for us (%d filled waits); want at most %d", waited, windows, p.paid, bound)
	}
	checkLearns(t, p)
}

// readBursts has a peer write bursts of perBurst packets of pkt bytes to a reader that never
// writes, each burst once the reader has read the one before (the peer's pause lasts until
// then), and returns the pacer and the highest mark seen while each burst was read.
func readBursts(t *testing.T, pkt, perBurst, bursts int) (*readPacer, []int) {
	t.Helper()
	c, s := tcpPair(t)
	p := startedPacer(t, c)
	p.sends = new(atomic.Uint64) // never bumped: the reader only reads
	next := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b := make([]byte, pkt)
		for range bursts {
			for range perBurst {
				if _, err := s.Write(b); err != nil {
					return
				}
			}
			if _, ok := <-next; !ok {
				return
			}
		}
	}()
	defer wg.Wait()
	defer close(next)
	buf := make([]byte, pkt*perBurst)
	marks := make([]int, bursts)
	for i := range bursts {
		marks[i] = readFull(t, p, buf)
		if i < bursts-1 {
			next <- struct{}{}
		}
	}
	return p, marks
}

// A stream that pauses between bursts, to a reader that never writes: each burst's tail waits
// for its deadline, the bytes after it come without a write of ours, and the mark comes back
// with every burst instead of backing off.
func TestReadPacerPausingStreamKeepsMark(t *testing.T) {
	const bursts = 12
	p, marks := readBursts(t, 80, 4000, bursts)
	raised := 0
	for _, m := range marks {
		if m >= paceMinMark {
			raised++
		}
	}
	t.Logf("%d bursts: mark up in %d, %d deadlines, %d judged pauses, level %d", bursts, raised, p.expired, p.resumed, p.level)
	if p.level != 0 {
		t.Fatalf("a stream that never waited for us backed off to level %d", p.level)
	}
	if raised < bursts/2 {
		t.Fatalf("the mark rose in %d of %d bursts", raised, bursts)
	}
}

// Bursts too short to fill the mark paceMinHits times, to a reader that never writes: each
// tail's deadline is judged by the next burst, which came without a write of ours, so the
// peer streams and the marks are the ceiling from then on (each wait then ends at the kernel's
// wake-up or the deadline: bounded, never a back-off). Every byte arrives (readFull).
func TestReadPacerShortBurstsRaiseMarkToCeiling(t *testing.T) {
	const bursts = 200
	p, marks := readBursts(t, 80, 50, bursts)
	top := 0
	for _, m := range marks {
		if m == p.maxMark {
			top++
		}
	}
	t.Logf("%d bursts: mark at the ceiling in %d, %d deadlines, %d judged pauses, %d filled waits, level %d", bursts, top, p.expired, p.resumed, p.paid, p.level)
	if p.level != 0 || p.resumed == 0 || !p.streams {
		t.Fatalf("level %d, %d pauses judged, streams %v: want no back-off and the peer known to stream", p.level, p.resumed, p.streams)
	}
	if top == 0 {
		t.Fatalf("the mark never reached the ceiling %d in %d bursts", p.maxMark, bursts)
	}
}

// stop ends a wait for the mark by the deadline it is given, and that deadline's error is the
// read's: the pacer does not read on past it.
func TestReadPacerStopEndsWait(t *testing.T) {
	c, s := tcpPair(t)
	p := startedPacer(t, c)
	if err := p.setLW(paceMaxMark); err != nil {
		t.Fatal(err)
	}
	p.mark = paceMaxMark
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := p.Read(b) // what is there already comes at once
	if err != nil || n != 1 {
		t.Fatalf("first read: %d, %v", n, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Read(b)
		done <- err
	}()
	p.stop(time.Now())
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after stop: %v; want the deadline's error", err)
	}
}

func TestReadCoalescingOption(t *testing.T) {
	for _, d := range []time.Duration{-time.Microsecond, 2 * time.Second} {
		if _, err := New(WithBroker("tcp://127.0.0.1:1"), WithReadCoalescing(d)); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("WithReadCoalescing(%v): %v; want ErrInvalidOption", d, err)
		}
	}
	c, _ := tcpPair(t)
	if p := newReadPacer(c, 0); p != nil {
		t.Error("a pacer with coalescing off")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if p := newReadPacer(a, DefaultReadCoalescing); p != nil {
		t.Error("a pacer on a connection that is not TCP")
	}
}
