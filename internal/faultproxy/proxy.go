// Package faultproxy is a TCP proxy that breaks connections on demand: it cuts them, cuts
// them after a number of bytes, stalls them, holds back what clients send, swallows them
// like a dead peer or refuses them. It can also record every byte it forwards (Record), so a
// test can show what the two ends said to each other around a fault. It listens on loopback
// only and owns every goroutine it starts: Close returns only when all of them have finished.
//
// It is the one proxy of the repository: the client's tests (New), the tern command's demo
// and scenarios and the benchmarks (Start) all use it. It imports no testing package, so a
// command can link it.
//
// Each connection has two directions. Up is client to server: bytes the proxied client
// writes, forwarded to the target. Down is server to client.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	up   = Up
	down = Down

	// bufSize is the most one pump holds in memory while stalled.
	bufSize = 32 << 10
	// holdLimit bounds the bytes Hold keeps back per connection; past it the proxy stops
	// reading that connection, as Stall does, until Hold(false), a cut or Close.
	holdLimit = 64 << 20
	// dialTimeout bounds the connection to the target; Close cancels it sooner.
	dialTimeout = 10 * time.Second
)

// Directions of a connection, as recorded in a Segment.
const (
	Up   = 0 // client to server
	Down = 1 // server to client
)

// Segment is a copy of one read's worth of bytes the proxy forwarded, kept while recording.
// A direction's segments, joined in order, are exactly the bytes its peer received.
type Segment struct {
	Conn int       // connection number: 1 for the first connection accepted, and so on
	Dir  int       // Up or Down
	At   time.Time // when the bytes were read, just before they were forwarded
	Data []byte
}

// Proxy forwards connections accepted on a loopback port to a target address, with faults
// switched on and off by its methods. Its methods are safe for concurrent use. Settings apply
// to connections as each method's comment says; none of them affects a connection that has
// already been closed.
type Proxy struct {
	ln       net.Listener
	ctx      context.Context // cancelled by Close, to abort dials in progress
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the accept loop and every connection's goroutines
	accepted atomic.Int64

	mu        sync.Mutex
	target    string
	links     map[*link]struct{}
	gate      chan struct{} // non-nil while stalled; Resume closes it
	changed   chan struct{} // closed and replaced whenever links or accepted change
	cutAfter  [2]int64      // per direction: bytes each new connection may forward; -1 no limit
	blackHole bool
	refuse    bool
	closed    bool

	recMu     sync.Mutex // a leaf: never held while taking another lock
	recording bool
	segments  []Segment
}

// link is one proxied connection: the accepted client side and, once dialled, the server side.
type link struct {
	num    int // connection number, in accept order from 1
	client net.Conn
	black  bool          // accepted as a dead peer: never dialled, never forwarded
	done   chan struct{} // closed by close

	mu      sync.Mutex
	server  net.Conn      // nil until dialled, and for ever for a black-holed connection
	left    [2]int64      // per direction: bytes still to forward before the cut; -1 no limit
	held    []byte        // up bytes kept back by Hold, never forwarded
	holding chan struct{} // non-nil while Hold keeps this link's up bytes; closed by Hold(false)
	closed  bool
}

// TB is the part of testing.TB that New uses; *testing.T and *testing.B satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// New starts a proxy on 127.0.0.1 with a free port that forwards each accepted connection to
// target. t.Cleanup closes it; a failure to listen fails t.
func New(t TB, target string) *Proxy {
	t.Helper()
	p, err := Start("127.0.0.1:0", target)
	if err != nil {
		t.Fatalf("faultproxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// Start starts a proxy listening on listen, a loopback host:port (port 0 picks a free one),
// that forwards each accepted connection to target. The caller must Close it. Use it where
// there is no test to clean up after: a command, a benchmark.
func Start(listen, target string) (*Proxy, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("listen address %q: loopback only", listen)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		ln:       ln,
		ctx:      ctx,
		cancel:   cancel,
		target:   target,
		links:    make(map[*link]struct{}),
		changed:  make(chan struct{}),
		cutAfter: [2]int64{-1, -1},
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's listening address, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL returns the proxy's address as an MQTT URL, "mqtt://127.0.0.1:port".
func (p *Proxy) URL() string { return "mqtt://" + p.Addr() }

// SetTarget makes future connections go to addr. Current connections keep their server.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = addr
}

// Cut closes every current connection, both the client's side and the server's, at once,
// and returns how many there were. Bytes Hold kept back go with them. New connections are
// forwarded as usual.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.links)
	for l := range p.links {
		p.dropLocked(l)
	}
	return n
}

// Hold, with on, makes the current connections keep back everything their clients send
// from now on: read and kept in memory, never forwarded, so a client's messages stay in
// flight, written but never seen by the server. Past 64 MiB a connection is no longer read.
// Connections accepted later are not held. Hold(false) stops holding and throws away what
// was held. Cut drops held bytes with their connections.
func (p *Proxy) Hold(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.mu.Lock()
		switch {
		case on && l.holding == nil:
			l.holding = make(chan struct{})
		case !on && l.holding != nil:
			close(l.holding)
			l.holding, l.held = nil, nil
		}
		l.mu.Unlock()
	}
}

// HeldPublishes counts the complete MQTT PUBLISH packets Hold keeps back on the current
// connections. Holding must have begun between two packets.
func (p *Proxy) HeldPublishes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.links {
		l.mu.Lock()
		n += countPublishes(l.held)
		l.mu.Unlock()
	}
	return n
}

// countPublishes walks the MQTT fixed headers in b and counts whole PUBLISH packets.
func countPublishes(b []byte) int {
	n := 0
	for len(b) >= 2 {
		rl, shift, i := 0, 0, 1
		for ; i < len(b) && i <= 4; i++ {
			rl |= int(b[i]&0x7F) << shift
			shift += 7
			if b[i] < 0x80 {
				break
			}
		}
		if i >= len(b) || i > 4 {
			return n
		}
		end := i + 1 + rl
		if end > len(b) {
			return n
		}
		if b[0]>>4 == 3 {
			n++
		}
		b = b[end:]
	}
	return n
}

// CutAfter closes each connection, both sides, as soon as n more bytes have been forwarded
// up (client to server): for current connections counting from now, for future ones from
// their start. The nth byte is delivered; nothing after it is. n == 0 cuts current
// connections now and future ones as they arrive; n < 0 turns the limit off. Black-holed
// connections are not affected.
func (p *Proxy) CutAfter(n int64) { p.setCutAfter(up, n) }

// CutAfterDown is CutAfter for the down direction: bytes forwarded from the server to the
// client. The two limits are independent; a connection is cut by whichever it reaches first.
func (p *Proxy) CutAfterDown(n int64) { p.setCutAfter(down, n) }

func (p *Proxy) setCutAfter(dir int, n int64) {
	n = max(n, -1)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutAfter[dir] = n
	for l := range p.links {
		if l.black {
			continue
		}
		l.mu.Lock()
		l.left[dir] = n
		l.mu.Unlock()
		if n == 0 {
			p.dropLocked(l)
		}
	}
}

// Stall stops forwarding in both directions on current and future connections until Resume.
// Connections stay open; the proxy stops reading, so bytes pile up in the kernel's buffers
// and a writer soon blocks, as behind a stalled peer. Up to 32 KiB per direction that were
// already read are held and delivered after Resume. Stalling twice is the same as once.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

// Resume restarts forwarding after Stall, delivering the held bytes first. Without a Stall it
// does nothing.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// BlackHole, while on, makes new connections dead peers: the proxy accepts them, reads and
// discards everything the client sends, never connects to the target, never answers and never
// closes them (Cut and Close still do). Current connections are not affected; use Stall or
// Cut for those. Turning it off leaves existing dead connections dead.
func (p *Proxy) BlackHole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackHole = on
}

// Refuse, while on, makes the proxy close each new connection as soon as it accepts it, as a
// broker that is going down would. Current connections are not affected. Refusal wins over
// BlackHole.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = on
}

// Conns returns the number of live connections: accepted, not refused, and not yet closed.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Accepted returns how many connections the proxy has accepted in total, refused ones
// included.
func (p *Proxy) Accepted() int { return int(p.accepted.Load()) }

// WaitConns waits until Conns() == n or ctx ends. A client's dial returns before the proxy
// has accepted the connection, so tests that count connections wait with this.
func (p *Proxy) WaitConns(ctx context.Context, n int) error {
	return p.wait(ctx, func() bool { return len(p.links) == n })
}

// WaitAccepted waits until Accepted() >= n or ctx ends, e.g. for a client's reconnection.
func (p *Proxy) WaitAccepted(ctx context.Context, n int) error {
	return p.wait(ctx, func() bool { return int(p.accepted.Load()) >= n })
}

func (p *Proxy) wait(ctx context.Context, cond func() bool) error {
	for {
		p.mu.Lock()
		ok, ch := cond(), p.changed
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// notifyLocked wakes the waiters of WaitConns and WaitAccepted. p.mu must be held.
func (p *Proxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Close stops accepting, closes every connection and waits until all of the proxy's
// goroutines have returned. It is idempotent and safe to call concurrently.
func (p *Proxy) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		p.cancel()
		p.ln.Close()
		for l := range p.links {
			p.dropLocked(l)
		}
		if p.gate != nil {
			close(p.gate)
			p.gate = nil
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or the like: back off briefly, unless closing.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.mu.Lock()
		num := int(p.accepted.Add(1))
		p.notifyLocked()
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c, num)
		}()
	}
}

// serve runs one accepted connection to its end.
func (p *Proxy) serve(c net.Conn, num int) {
	p.mu.Lock()
	if p.closed || p.refuse {
		p.mu.Unlock()
		c.Close()
		return
	}
	l := &link{num: num, client: c, black: p.blackHole, done: make(chan struct{}), left: p.cutAfter}
	target := p.target
	p.links[l] = struct{}{}
	p.notifyLocked()
	p.mu.Unlock()
	defer p.drop(l)

	if l.black {
		_, _ = io.Copy(io.Discard, c)
		return
	}
	l.mu.Lock()
	zero := l.left[up] == 0 || l.left[down] == 0
	l.mu.Unlock()
	if zero {
		return // CutAfter(0) was in force when it arrived
	}
	d := net.Dialer{Timeout: dialTimeout}
	s, err := d.DialContext(p.ctx, "tcp", target)
	if err != nil {
		return // the client sees its connection closed, as if refused
	}
	if !l.setServer(s) {
		s.Close()
		return
	}
	upDone := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(upDone)
		p.pump(l, up)
	}()
	p.pump(l, down)
	<-upDone
}

// pump copies one direction of l until either side fails, the cut budget runs out or the
// link is closed. A clean end of stream is passed on as a half-close, so a peer that shuts
// down its sending side only is seen as such on the other end.
func (p *Proxy) pump(l *link, dir int) {
	src, dst := l.client, l.server
	if dir == down {
		src, dst = dst, src
	}
	buf := make([]byte, bufSize)
	for {
		if !p.waitGate(l) {
			return
		}
		n, err := src.Read(buf)
		held := false
		if n > 0 && dir == up {
			var ok bool
			if held, ok = l.keep(buf[:n]); !ok {
				return
			}
		}
		if n > 0 && !held {
			// Hold what was read while stalled: Stall may have come during the Read.
			if !p.waitGate(l) {
				return
			}
			allowed, cut := l.take(dir, n)
			if allowed > 0 {
				p.record(l, dir, buf[:allowed])
				if _, werr := dst.Write(buf[:allowed]); werr != nil {
					p.drop(l)
					return
				}
			}
			if cut {
				p.drop(l)
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			p.drop(l)
			return
		}
	}
}

// Record turns recording on or off. While on, every byte forwarded on any connection, in
// either direction, is copied into a Segment that Recording returns; nothing is ever
// dropped, so the memory grows with the traffic: meant for tests that move megabytes, not
// gigabytes. Turning it off keeps what was recorded.
func (p *Proxy) Record(on bool) {
	p.recMu.Lock()
	defer p.recMu.Unlock()
	p.recording = on
}

// Recording returns a copy of the list of segments recorded so far, in the order they were
// read. Segments of different connections or directions may interleave in any order that
// agrees with their reads; within one connection and direction the order is exact.
func (p *Proxy) Recording() []Segment {
	p.recMu.Lock()
	defer p.recMu.Unlock()
	return append([]Segment(nil), p.segments...)
}

func (p *Proxy) record(l *link, dir int, b []byte) {
	p.recMu.Lock()
	defer p.recMu.Unlock()
	if p.recording {
		p.segments = append(p.segments, Segment{Conn: l.num, Dir: dir, At: time.Now(),
			Data: append([]byte(nil), b...)})
	}
}

// waitGate blocks while the proxy is stalled. It returns false if l is closed meanwhile.
func (p *Proxy) waitGate(l *link) bool {
	for {
		p.mu.Lock()
		g := p.gate
		p.mu.Unlock()
		if g == nil {
			select {
			case <-l.done:
				return false
			default:
				return true
			}
		}
		select {
		case <-g:
		case <-l.done:
			return false
		}
	}
}

// drop closes l and forgets it. It is idempotent.
func (p *Proxy) drop(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropLocked(l)
}

func (p *Proxy) dropLocked(l *link) {
	l.close()
	if _, ok := p.links[l]; ok {
		delete(p.links, l)
		p.notifyLocked()
	}
}

// take returns how many of n bytes read in direction dir may be forwarded, and whether the
// link must be cut after forwarding them.
func (l *link) take(dir, n int) (allowed int, cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	left := l.left[dir]
	if left < 0 {
		return n, false
	}
	if int64(n) >= left {
		l.left[dir] = 0
		return int(left), true
	}
	l.left[dir] = left - int64(n)
	return n, false
}

// keep keeps b back if Hold holds l, and then waits while l holds holdLimit bytes. It
// reports whether b was kept, and false for ok if l was closed meanwhile.
func (l *link) keep(b []byte) (held, ok bool) {
	l.mu.Lock()
	if l.holding == nil {
		l.mu.Unlock()
		return false, true
	}
	l.held = append(l.held, b...)
	full, ch := len(l.held) >= holdLimit, l.holding
	l.mu.Unlock()
	if full {
		select {
		case <-ch:
		case <-l.done:
			return true, false
		}
	}
	return true, true
}

// setServer attaches the dialled server side, or reports false if l was closed meanwhile.
func (l *link) setServer(s net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.server = s
	return true
}

// close closes both sides; blocked reads and writes on them return at once.
func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	l.client.Close()
	if l.server != nil {
		l.server.Close()
	}
	close(l.done)
}
