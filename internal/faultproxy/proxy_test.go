package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// prompt bounds every wait for something that should happen at once.
	prompt = 5 * time.Second
	// quiet is how long a test listens for something that must not happen. It only has to be
	// long enough for a forwarded byte to cross loopback, far less than this.
	quiet = 150 * time.Millisecond
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoGoroutines(prompt); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left behind after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// ours returns the stacks of goroutines running this package's code (the proxy or the test
// servers), other than the caller's own goroutine.
func ours(skip string) string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "internal/faultproxy.") && !strings.Contains(g, skip) &&
			!strings.Contains(g, "faultproxy.TestMain") && !strings.Contains(g, "faultproxy.ours") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// proxyLeft polls until no goroutine of a Proxy method is left, and returns the stacks of
// those still there at the deadline.
func proxyLeft(d time.Duration) string {
	deadline := time.Now().Add(d)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		var left []string
		for g := range strings.SplitSeq(ours("\x00"), "\n\n") {
			if strings.Contains(g, "(*Proxy)") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(pause)
	}
}

// waitNoGoroutines polls until none of this package's goroutines are left, and returns the
// stacks of those still there at the deadline.
func waitNoGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		s := ours("\x00")
		if s == "" || time.Now().After(deadline) {
			return s
		}
		time.Sleep(pause)
	}
}

// server is a loopback TCP server for the proxy to forward to. Each connection runs handle;
// cleanup closes everything and waits for every handler.
type server struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startServer(t *testing.T, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// sink returns a handler that echoes each connection and, at its end, sends everything it
// read on the returned channel.
func sink() (func(net.Conn), chan []byte) {
	got := make(chan []byte, 16)
	return func(c net.Conn) {
		var all []byte
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			all = append(all, buf[:n]...)
			// Echo too, so the client can tell what has arrived. Writes into a cut
			// connection fail; reading on finds the end.
			if n > 0 {
				_, _ = c.Write(buf[:n])
			}
			if err != nil {
				got <- all
				return
			}
		}
	}, got
}

// talker returns a handler that writes msg and then waits for the peer to go.
func talker(msg []byte) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := c.Write(msg); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, prompt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(prompt))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(prompt))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// roundTrip sends msg through an echoing target and checks it comes back.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	write(t, c, []byte(msg))
	if got := string(readN(t, c, len(msg))); got != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// expectClosed checks that c's peer has closed: a read returns EOF or a reset promptly,
// not a timeout.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(prompt))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", prompt)
	}
}

// expectSilent checks that nothing arrives on c for a while and the connection stays open.
func expectSilent(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(quiet))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read %d bytes, %v; want a timeout", n, err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), prompt)
	t.Cleanup(cancel)
	return ctx
}

func TestForward(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := New(t, s.addr())
	if p.URL() != "mqtt://"+p.Addr() || !strings.HasPrefix(p.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr %q URL %q", p.Addr(), p.URL())
	}
	c := dial(t, p.Addr())
	roundTrip(t, c, "hello")

	// A bulk transfer both ways at once, larger than every buffer on the path.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	errc := make(chan error, 1)
	go func() {
		c.SetWriteDeadline(time.Now().Add(prompt))
		_, err := c.Write(big)
		errc <- err
	}()
	if got := readN(t, c, len(big)); !bytes.Equal(got, big) {
		t.Fatal("bulk echo differs")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if p.Conns() != 1 || p.Accepted() != 1 {
		t.Fatalf("Conns %d Accepted %d, want 1 1", p.Conns(), p.Accepted())
	}

	// The client's close reaches the server, which closes in turn, and the proxy forgets the
	// connection.
	c.Close()
	if err := p.WaitConns(ctxT(t), 0); err != nil {
		t.Fatalf("connection still counted after the client closed: %v", err)
	}
}

func TestHalfClose(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := New(t, s.addr())
	c := dial(t, p.Addr())
	write(t, c, []byte("last words"))
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(prompt))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last words" {
		t.Fatalf("after half-close read %q, %v", got, err)
	}
}

func TestCut(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := New(t, s.addr())
	a, b := dial(t, p.Addr()), dial(t, p.Addr())
	roundTrip(t, a, "a")
	roundTrip(t, b, "b")

	p.Cut()
	if n := p.Conns(); n != 0 {
		t.Fatalf("Conns %d right after Cut", n)
	}
	expectClosed(t, a)
	expectClosed(t, b)

	c := dial(t, p.Addr())
	roundTrip(t, c, "after the cut")
	if n := p.Accepted(); n != 3 {
		t.Fatalf("Accepted %d, want 3", n)
	}
}

func TestCutAfterUp(t *testing.T) {
	t.Parallel()
	handle, got := sink()
	s := startServer(t, handle)
	p := New(t, s.addr())
	payload := []byte("0123456789abcdefghij")

	// old is connected before the limit is set, so it counts from the CutAfter call.
	old := dial(t, p.Addr())
	roundTrip(t, old, string(payload[:3]))
	p.CutAfter(5)
	write(t, old, payload[3:])
	expectClosed(t, old)
	if b := recv(t, got); string(b) != string(payload[:8]) {
		t.Fatalf("server got %q, want %q", b, payload[:8])
	}

	// A new connection gets the full allowance from its start.
	c := dial(t, p.Addr())
	write(t, c, payload)
	expectClosed(t, c)
	if b := recv(t, got); string(b) != string(payload[:5]) {
		t.Fatalf("server got %q, want %q", b, payload[:5])
	}

	// Exactly the allowance is delivered, and the cut follows it without another byte.
	c = dial(t, p.Addr())
	write(t, c, payload[:5])
	expectClosed(t, c)
	if b := recv(t, got); string(b) != string(payload[:5]) {
		t.Fatalf("server got %q, want %q", b, payload[:5])
	}

	p.CutAfter(-1)
	c = dial(t, p.Addr())
	write(t, c, payload)
	c.Close()
	if b := recv(t, got); string(b) != string(payload) {
		t.Fatalf("with the limit off the server got %q", b)
	}
}

func TestCutAfterZero(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := New(t, s.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, "x")
	p.CutAfter(0)
	expectClosed(t, c)
	expectClosed(t, dial(t, p.Addr()))
	if s.accepted.Load() != 1 {
		t.Fatalf("target saw %d connections; a connection cut on arrival must not be dialled", s.accepted.Load())
	}
}

func TestCutAfterDown(t *testing.T) {
	t.Parallel()
	msg := []byte("CONNACK and more bytes after it")
	s := startServer(t, talker(msg))
	p := New(t, s.addr())
	p.CutAfterDown(7)
	c := dial(t, p.Addr())
	c.SetReadDeadline(time.Now().Add(prompt))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("not cut")
	}
	if string(got) != string(msg[:7]) {
		t.Fatalf("client got %q, want %q", got, msg[:7])
	}
}

func recv(t *testing.T, ch chan []byte) []byte {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(prompt):
		t.Fatal("server connection did not end")
		return nil
	}
}

func TestStallResume(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := New(t, s.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, "before")

	p.Stall()
	p.Stall() // twice is once
	write(t, c, []byte("held"))
	expectSilent(t, c)
	// A connection made while stalled is accepted but forwards nothing either.
	late := dial(t, p.Addr())
	write(t, late, []byte("late"))
	expectSilent(t, late)

	p.Resume()
	if got := string(readN(t, c, 4)); got != "held" {
		t.Fatalf("after Resume got %q", got)
	}
	if got := string(readN(t, late, 4)); got != "late" {
		t.Fatalf("after Resume got %q", got)
	}
	p.Resume() // without a Stall: nothing
	roundTrip(t, c, "after")
}

func TestStallUpstreamOnly(t *testing.T) {
	t.Parallel()
	// The target must see nothing while stalled, not merely the client.
	var mu sync.Mutex
	var seen []byte
	arrived := make(chan struct{}, 64)
	s := startServer(t, func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			mu.Lock()
			seen = append(seen, buf[:n]...)
			mu.Unlock()
			if n > 0 {
				arrived <- struct{}{}
			}
			if err != nil {
				return
			}
		}
	})
	p := New(t, s.addr())
	p.Stall()
	c := dial(t, p.Addr())
	write(t, c, []byte("queued"))
	select {
	case <-arrived:
		t.Fatal("target received bytes while stalled")
	case <-time.After(quiet):
	}
	p.Resume()
	deadline := time.After(prompt)
	for {
		mu.Lock()
		done := string(seen) == "queued"
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-arrived:
		case <-deadline:
			t.Fatalf("target got %q after Resume", seen)
		}
	}
}

// TestStallBackpressure checks that a stalled proxy stops reading: a writer that keeps
// writing blocks once the kernel buffers fill, as behind a stalled peer.
func TestStallBackpressure(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	p := New(t, s.addr())
	c := dial(t, p.Addr())
	write(t, c, []byte("x"))
	if err := p.WaitConns(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	p.Stall()
	// Small writes, each with its own deadline: the race detector makes one huge write slow.
	chunk := make([]byte, 64<<10)
	total := 0
	for {
		c.SetWriteDeadline(time.Now().Add(quiet))
		n, err := c.Write(chunk)
		total += n
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if total > 256<<20 {
			t.Fatalf("wrote %d bytes into a stalled proxy without blocking", total)
		}
	}
	t.Logf("%d bytes buffered before the writer blocked", total)
	p.Resume()
}

func TestBlackHole(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := New(t, s.addr())
	live := dial(t, p.Addr())
	roundTrip(t, live, "live")

	p.BlackHole(true)
	dead := dial(t, p.Addr())
	// It swallows any amount without pushing back: more than the kernel would buffer.
	chunk := make([]byte, 64<<10)
	for range 256 {
		write(t, dead, chunk)
	}
	expectSilent(t, dead)
	if err := p.WaitConns(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	if s.accepted.Load() != 1 {
		t.Fatalf("target saw %d connections, want only the live one", s.accepted.Load())
	}
	roundTrip(t, live, "still live") // current connections are untouched

	p.BlackHole(false)
	roundTrip(t, dial(t, p.Addr()), "forwarded again")
	expectSilent(t, dead) // a dead connection stays dead
	p.Cut()
	expectClosed(t, dead)
}

func TestRefuse(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := New(t, s.addr())
	live := dial(t, p.Addr())
	roundTrip(t, live, "live")

	p.Refuse(true)
	p.BlackHole(true) // refusal wins
	expectClosed(t, dial(t, p.Addr()))
	roundTrip(t, live, "still live")
	if p.Accepted() != 2 || p.Conns() != 1 {
		t.Fatalf("Accepted %d Conns %d, want 2 1", p.Accepted(), p.Conns())
	}

	p.Refuse(false)
	p.BlackHole(false)
	roundTrip(t, dial(t, p.Addr()), "welcome back")
	if err := p.WaitAccepted(ctxT(t), 3); err != nil {
		t.Fatal(err)
	}
}

func TestSetTarget(t *testing.T) {
	t.Parallel()
	a := startServer(t, talker([]byte("A")))
	b := startServer(t, talker([]byte("B")))
	p := New(t, a.addr())
	first := dial(t, p.Addr())
	if got := string(readN(t, first, 1)); got != "A" {
		t.Fatalf("first connection reached %q", got)
	}
	p.SetTarget(b.addr())
	if got := string(readN(t, dial(t, p.Addr()), 1)); got != "B" {
		t.Fatalf("after SetTarget reached %q", got)
	}
	write(t, first, []byte("ping"))
	expectSilent(t, first) // still open, still on A
}

func TestTargetDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now
	p := New(t, addr)
	expectClosed(t, dial(t, p.Addr()))
	if err := p.WaitConns(ctxT(t), 0); err != nil {
		t.Fatal(err)
	}
}

// TestCloseWaits runs alone (not parallel) so that every goroutine of this package that
// exists is its own: after Close returns, none of the proxy's may be left.
func TestCloseWaits(t *testing.T) {
	s := startServer(t, echo)
	hole := startServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	p := New(t, s.addr())

	busy := dial(t, p.Addr())
	roundTrip(t, busy, "x")
	p.Stall()
	stalled := dial(t, p.Addr())
	write(t, stalled, []byte("held"))
	p.BlackHole(true)
	dead := dial(t, p.Addr())
	p.BlackHole(false)
	p.SetTarget(hole.addr())
	blocked := dial(t, p.Addr()) // stalled too, with data in flight
	write(t, blocked, make([]byte, 64<<10))
	if err := p.WaitConns(ctxT(t), 4); err != nil {
		t.Fatal(err)
	}

	p.Close()
	// A goroutine that has called wg.Done may still be on its way out for a moment, so
	// poll briefly; one still blocked in the proxy stays and fails the test.
	if left := proxyLeft(time.Second); left != "" {
		t.Fatalf("proxy goroutines still running after Close:\n%s", left)
	}
	for _, c := range []net.Conn{busy, stalled, dead, blocked} {
		expectClosed(t, c)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), prompt); err == nil {
		t.Fatal("still accepting after Close")
	}
	p.Close() // idempotent
}

func TestCloseCountsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		// A private server and proxy, closed here rather than in cleanup.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			echo(c)
		}()
		p := New(t, ln.Addr().String())
		c, err := net.DialTimeout("tcp", p.Addr(), prompt)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c, "count me")
		p.Close()
		ln.Close()
		wg.Wait()
	}()
	deadline := time.Now().Add(prompt)
	for pause := time.Millisecond; runtime.NumGoroutine() > before; pause = min(2*pause, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(pause)
	}
}

// Recording keeps, per connection and direction, exactly the bytes forwarded while it is on,
// numbered by connection in accept order.
func TestRecord(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := New(t, s.addr())
	c1 := dial(t, p.Addr())
	roundTrip(t, c1, "before") // not recorded
	p.Record(true)
	roundTrip(t, c1, "one")
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, "two")
	roundTrip(t, c1, "three")
	p.Record(false)
	roundTrip(t, c2, "after") // not recorded

	var got [3][2]string // [conn][dir]
	for _, sg := range p.Recording() {
		if sg.Conn < 1 || sg.Conn > 2 || (sg.Dir != Up && sg.Dir != Down) || sg.At.IsZero() {
			t.Fatalf("bad segment %+v", sg)
		}
		got[sg.Conn][sg.Dir] += string(sg.Data)
	}
	want := [3][2]string{{}, {"onethree", "onethree"}, {"two", "two"}}
	if got != want {
		t.Fatalf("recorded %q, want %q", got, want)
	}
}
