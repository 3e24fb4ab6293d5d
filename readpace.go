package tern

import (
	"errors"
	"net"
	"net/url"
	"os"
	"sync/atomic"
	"time"
)

// Read coalescing (WithReadCoalescing). A broker forwarding a fast stream writes one packet
// per system call. A client that keeps up reads each packet as it arrives: every packet then
// costs the client a wake-up of its read loop (a parked thread woken, the poller, the
// scheduler) and the broker's write a wake-up of the client's thread. The read loop spends
// most of its time parking and waking, and both sides slow down.
//
// The pacer lets the kernel gather the stream instead: under a fast stream it raises the
// socket's low-water mark for reading (SO_RCVLOWAT), so the read loop is woken only once
// that many bytes are waiting, and it bounds each such wait with a read deadline. The mark
// follows the measured arrival rate (what arrives within half the delay bound), and is off
// (1 byte) for anything slower: a lone packet, a request and its answer, a trickle of
// messages are read as soon as they arrive. A wait that reaches its deadline reads what has
// arrived. Such a deadline is a pause in a stream when the stream filled the mark several
// times since the last one (paceMinHits), however soon: a stream on a busy machine pauses
// often, and each pause costs no more than the pause itself. A peer that sends windows of
// that many marks before it waits for us costs at most one deadline per paceMinHits filled
// waits. Any other deadline is judged by what comes next: a peer that sends more before we
// have begun a write was not waiting for us, and the deadline was a pause too (a live
// stream to a subscriber that only reads). Such a peer is a stream: the mark rises to the
// ceiling (16 KiB), whatever the rate, and a wait ends when that much has come, when the
// kernel finds the receive window about to close or the buffer under pressure (Linux wakes
// a SO_RCVLOWAT reader for both), or at the deadline, so it never outlasts the bound. A
// sender that stalls until our read meanwhile (a stream from Mosquitto stops after about 20
// small segments and resumes right after our next read, whose TCP acknowledgement reopens
// its flow) queues what the broker writes during the wait and sends it in large segments
// after our read: the broker spends less per message, and a broker-bound stream goes faster. A peer that had
// sent enough by the deadline to be worth a mark, though it may have waited for our write,
// taught us its window: the marks stay at half of it until more than a window comes at once.
// Otherwise the mark is not paying: most often a peer that sends no more until it hears
// from us (a full Receive Maximum window, a request waiting for its answer), which leaves
// the tail of each window below any mark, however low. The mark then stays off for a quiet
// period that doubles each time this happens again (20 ms up to 2.56 s at the default
// bound) and halves only after a period in which the mark was up and paid. Such a peer
// costs a deadline now and then, not one per window. The acknowledgements a batch causes
// leave before the read loop reads again (endBatch), never behind a wait.
//
// Only plain TCP connections on Linux have it (the kernel wakes a reader by SO_RCVLOWAT
// there); TLS, WebSocket, Unix sockets and custom dialers read as before.
type readPacer struct {
	nc    net.Conn
	setLW func(int) error // sets SO_RCVLOWAT
	delay time.Duration   // the longest a read waits for the mark (the deadline)
	// maxMark is the highest mark: paceMaxMark, or less for a small receive buffer.
	maxMark int
	// ceil is the highest mark for now: half a learned window (judge), doubled after each
	// paceMinHits waits the stream filled (grow) up to highest once the cap is lifted.
	ceil int
	grow int

	on      atomic.Bool  // set once the connection's read loop runs
	final   atomic.Int64 // unix nanos of a deadline set to end the read loop (stop); 0 if none
	mark    int          // the current SO_RCVLOWAT; 1 is off
	expired int          // waits that reached their deadline, in all
	hits    int          // waits the stream filled (the mark or the buffer) since the last deadline
	paid    int          // such waits, in all
	level   int          // back-off, 0 to paceMaxLevel: a quiet period lasts quietUnit << level
	downs   int          // times the level went down, in all
	quiet   time.Time    // the mark stays off until then
	calm    time.Time    // the level may go down from then, once the mark has paid (hits)
	// The arrival rate is measured over windows of at least delay: bytes read since winStart.
	winStart time.Time
	winBytes int
	armed    bool // a read deadline of ours is set
	// sends counts the writes the connection has begun (writer.begun); nil until the
	// connection has a writer, and in tests of the policy alone (every deadline is then
	// judged by hits when it happens).
	sends *atomic.Uint64
	// A deadline the stream had not paid for waits for its verdict until the next bytes
	// arrive (pending): if we had begun no write since the deadline (sentAt), the peer went
	// on without hearing from us, and the deadline was a pause in its stream (resumed).
	pending bool
	sentAt  uint64
	resumed int
	// streams says the last verdict was resumed: the peer sends without waiting for us, so
	// the mark is the ceiling, not what the rate fills in half the bound (observe).
	streams bool
	// tail is what the read at the last deadline took: what the peer had sent by then. A
	// peer that may have waited for us but sent that much is learned from (judge): it sends
	// windows of window bytes and waits for our answer, so the marks stay at half of that
	// (capped) until a read brings more than a window (the peer did not wait). Learned (learns) at
	// most once per paceMinHits filled waits (sinceLearn), or narrowed (narrows) at once to
	// a window a quarter smaller.
	tail       int
	window     int
	capped     bool // the marks are held at half the window (until a read brings more)
	learns     int
	narrows    int
	sinceLearn int

	waiting func() // tests: called before a read that may wait for the mark
}

const (
	paceMinMark  = 512      // below this the mark is off: too little to be worth a wait
	paceMaxMark  = 16 << 10 // half the read buffer: a wait never outgrows what one read takes
	paceMinHits  = 8        // filled waits that make a deadline a pause, not a peer waiting
	paceMaxLevel = 8        // the longest quiet period is quietUnit << paceMaxLevel
)

// DefaultReadCoalescing is the longest the read loop waits for a fast stream to fill a batch
// (see WithReadCoalescing).
const DefaultReadCoalescing = 500 * time.Microsecond

// coalescing is the read coalescing bound for a connection to u: WithReadCoalescing's for
// the plain TCP connections the client dials itself (mqtt://, tcp://), 0 (no pacer) for
// anything from WithDialFunc or a Transport, whose socket belongs to the code that made it.
func (c *config) coalescing(u *url.URL) time.Duration {
	if c.dial != nil || (u.Scheme != "mqtt" && u.Scheme != "tcp") {
		return 0
	}
	return c.readCoalesce
}

// newReadPacer returns the pacer of nc, or nil when nc cannot have one or delay is 0.
func newReadPacer(nc net.Conn, delay time.Duration) *readPacer {
	if delay <= 0 {
		return nil
	}
	set, most := lowWaterSetter(nc)
	if set == nil || most < paceMinMark {
		return nil
	}
	most = min(most, paceMaxMark)
	return &readPacer{nc: nc, setLW: set, delay: delay, mark: 1, maxMark: most, ceil: most, sinceLearn: paceMinHits}
}

// start lets the pacer act; before it (the handshake) every read is passed straight on.
func (p *readPacer) start() { p.on.Store(true) }

// stop makes deadline the connection's read deadline for good: the pacer's own waits end by
// then and it raises no mark again. Any goroutine.
func (p *readPacer) stop(deadline time.Time) {
	p.final.Store(deadline.UnixNano())
	p.on.Store(false)
	p.nc.SetReadDeadline(deadline)
}

// Read implements io.Reader for the connection's packet reader. Reader goroutine only.
func (p *readPacer) Read(b []byte) (int, error) {
	if !p.on.Load() {
		if p.mark > 1 || p.armed {
			p.reset()
		}
		return p.nc.Read(b)
	}
	waits := p.mark > 1
	if waits {
		dl := time.Now().Add(p.delay)
		if f := p.final.Load(); f != 0 && f < dl.UnixNano() {
			dl = time.Unix(0, f)
		}
		p.nc.SetReadDeadline(dl)
		p.armed = true
		if p.waiting != nil {
			p.waiting()
		}
	}
	n, err := p.nc.Read(b)
	now := time.Now()
	if err != nil && p.armed && errors.Is(err, os.ErrDeadlineExceeded) {
		if f := p.final.Load(); f == 0 || now.UnixNano() < f {
			// Our own deadline: the stream slowed below the mark. Read what has come, as
			// if the mark were off (failed decides whether it stays off for a while).
			if f == 0 {
				p.failed(now)
			}
			p.reset()
			if n > 0 {
				err = nil
			} else {
				n, err = p.nc.Read(b)
			}
			p.tail = n
			return n, err
		}
	}
	if err != nil {
		return n, err
	}
	if p.pending && n > 0 {
		p.judge(now)
	}
	p.unlearn(n)
	if waits && n >= min(p.mark, len(b)) {
		p.filled() // the stream filled the mark (or the buffer): a wake-up saved
	}
	p.observe(n, now)
	return n, nil
}

// filled records a wait for the mark that the stream filled.
func (p *readPacer) filled() {
	p.hits++
	p.paid++
	p.sinceLearn++
	if p.grow++; p.grow >= paceMinHits && p.ceil < p.highest() {
		p.ceil, p.grow = min(2*p.ceil, p.highest()), 0
	}
}

// unlearn lifts the cap of the learned window when a read brought n bytes, more than a
// window: the peer sent that much without waiting for us (Mosquitto overruns its window under
// load). The window is kept: a smaller one after it is still narrowed at once.
func (p *readPacer) unlearn(n int) {
	if p.capped && n > p.window {
		p.capped = false
	}
}

// highest is the most the ceiling may grow to: half a learned window, or maxMark.
func (p *readPacer) highest() int {
	if p.capped {
		return max(p.window/2, paceMinMark)
	}
	return p.maxMark
}

// failed records a wait that reached its deadline at now. A pause in a stream that the mark
// pays for is forgiven at once; any other deadline is judged when the next bytes arrive
// (judge), or backs off now when the pacer cannot tell (no write counter).
func (p *readPacer) failed(now time.Time) {
	p.expired++
	filled := p.hits
	p.hits = 0
	if filled >= paceMinHits {
		return // a pause in a stream that filled the mark often enough since the last one
	}
	if p.sends == nil {
		p.backOff(now)
		return
	}
	p.pending, p.sentAt = true, p.sends.Load()
}

// judge gives the verdict on the pending deadline once bytes have arrived after it, at now.
// The tail read at the deadline took all that had arrived by then, so these bytes were sent
// later: with no write of ours begun in between, the peer was not waiting for us (a stream
// that paused: the broker busy, its publisher slow, or its TCP flow waiting for what our
// read acknowledges), and from then on the mark is the ceiling (streams).
// Otherwise the peer
// may have been waiting for what we sent (an acknowledgement that opened its window, a
// request it answers). If it had sent enough by the deadline to be worth a mark (a broker
// draining a session through its window of unacknowledged messages: Mosquitto's 20 at 64 B
// payloads are 1.5 KiB), that is its window: the marks stay at half of it (its windows are
// not all as large), learned once per paceMinHits filled waits, or at once when the window is
// a quarter smaller than the one learned (narrows: a dozen at most, from twice the highest
// mark to the least window). Otherwise the pacer backs off.
func (p *readPacer) judge(now time.Time) {
	p.pending = false
	if p.sends.Load() == p.sentAt {
		p.resumed++
		p.streams = true
		return
	}
	p.streams = false
	// A window over twice the highest mark caps nothing (the marks stay at half of it).
	if w := min(p.tail, 2*p.maxMark); w/2 >= paceMinMark {
		switch {
		case p.sinceLearn >= paceMinHits:
			p.learns++
		case p.window > 0 && w <= p.window*3/4:
			p.narrows++
		default:
			p.backOff(now)
			return
		}
		p.window, p.capped, p.sinceLearn = w, true, 0
		p.ceil, p.grow = p.highest(), 0
		return
	}
	p.backOff(now)
}

// backOff keeps the mark off for a quiet period at now, longer at each back-off: the mark is
// not paying, and a lower one would fail the same way (a peer that waits for us leaves the
// tail of each window below any mark).
func (p *readPacer) backOff(now time.Time) {
	p.level = min(p.level+1, paceMaxLevel)
	p.quiet = now.Add(p.quietUnit() << p.level)
	p.calm = p.quiet.Add(p.quietUnit() << p.level)
}

// quietUnit is the back-off's time unit: 20 delay bounds (10 ms at the default bound).
func (p *readPacer) quietUnit() time.Duration { return 20 * p.delay }

// observe counts n bytes read at now and, once a window of at least the delay bound has
// passed, sets the arrival rate from the window (bytes over its time: single reads are too
// noisy, one that finds what arrived while the last batch was handled looks fast) and the
// mark for the reads that follow: what the stream brings in half the delay bound, if that is
// worth a wait.
func (p *readPacer) observe(n int, now time.Time) {
	if p.winStart.IsZero() {
		p.winStart = now
		return
	}
	p.winBytes += n
	span := now.Sub(p.winStart)
	if span < p.delay {
		return
	}
	rate := float64(p.winBytes) / float64(span)
	p.winStart, p.winBytes = now, 0
	if p.level > 0 && p.hits >= paceMinHits && !now.Before(p.calm) {
		// A period with the mark up and paying, and no back-off: trust it a step more.
		p.level--
		p.downs++
		p.calm = now.Add(p.quietUnit() << p.level)
	}
	want := min(int(rate*float64(p.delay/2)), p.ceil)
	if want < paceMinMark || now.Before(p.quiet) {
		want = 1
	} else if p.streams {
		want = p.ceil
	}
	// Change the mark only for a real difference: each change is a system call.
	if want == 1 && p.mark > 1 {
		p.reset()
	} else if want > 1 && (want > p.mark+p.mark/4 || want < p.mark-p.mark/4) {
		if p.setLW(want) == nil {
			p.mark = want
		}
	}
}

// reset turns the mark off and removes the pacer's deadline (restoring a final one).
func (p *readPacer) reset() {
	if p.mark > 1 {
		p.setLW(1)
		p.mark = 1
	}
	if p.armed {
		var dl time.Time
		if f := p.final.Load(); f != 0 {
			dl = time.Unix(0, f)
		}
		p.nc.SetReadDeadline(dl)
		p.armed = false
	}
	p.winStart, p.winBytes = time.Time{}, 0
}
