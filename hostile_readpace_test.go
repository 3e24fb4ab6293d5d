package tern

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

// Hostile and adversarial cases of read coalescing (readpace.go). The pacer's fields are the
// reader goroutine's: the tests read them once the reader has stopped (after Disconnect), or
// drive a pacer of their own with no reader running.

// policyPacer returns a started pacer on a loopback TCP connection whose SO_RCVLOWAT setter
// only records the marks asked for, so its policy can be driven with chosen times.
func policyPacer(t *testing.T) (*readPacer, *[]int) {
	t.Helper()
	c, _ := tcpPair(t)
	p := startedPacer(t, c)
	var set []int
	p.setLW = func(v int) error { set = append(set, v); return nil }
	return p, &set
}

// fastWindow feeds p one rate window of a stream far faster than any mark (64 KiB per delay
// bound) ending at now, as the reads of such a stream would, and returns the window's end.
func fastWindow(p *readPacer, now time.Time) time.Time { return streamWindow(p, now, 64<<10) }

// streamWindow feeds p one rate window of n bytes per delay bound ending at now.
func streamWindow(p *readPacer, now time.Time, n int) time.Time {
	if p.winStart.IsZero() {
		p.observe(0, now)
		now = now.Add(p.delay)
	}
	p.observe(n, now)
	return now
}

// slowWindow feeds p one rate window of a trickle (far below any mark) ending at now.
func slowWindow(p *readPacer, now time.Time) time.Time {
	if p.winStart.IsZero() {
		p.observe(0, now)
		now = now.Add(p.delay)
	}
	p.observe(8, now)
	return now
}

// fillWaits is what Read does after n reads whose wait for the mark the stream filled.
func fillWaits(p *readPacer, n int) {
	for range n {
		p.filled()
	}
}

// deadline is what Read does when a wait for the mark reaches its deadline at now.
func deadline(p *readPacer, now time.Time) {
	p.failed(now)
	p.reset()
}

// arrive is what Read does with bytes that arrive at now after a deadline: the pending
// verdict first, then the rate window.
func arrive(p *readPacer, n int, now time.Time) {
	if p.pending {
		p.judge(now)
	}
	p.observe(n, now)
}

// maxNarrows is the most a learned window can narrow: each narrowing takes it to a quarter
// less, from twice the highest mark (32 KiB) to the least window worth a mark (1 KiB).
const maxNarrows = 13

// TestHostileReadPaceLearnsWindow: a deadline after a write of ours whose tail (what the peer
// had sent by then) is worth a mark teaches the pacer the peer's window: a broker draining a
// session through its window of unacknowledged messages sends that much after each batch of
// acknowledgements and waits. The marks stay at half of it, with no back-off, and do not
// grow past that until a read brings more than a window (the peer did not wait; the window
// is kept for narrowing). Another such
// deadline before paceMinHits filled waits narrows the window if its tail is a quarter
// smaller, and backs off otherwise; so does one whose tail is below twice any mark (a
// Receive Maximum of a few messages): too little to gather.
func TestHostileReadPaceLearnsWindow(t *testing.T) {
	p, _ := policyPacer(t)
	var sends atomic.Uint64
	p.sends = &sends
	now := time.Now()
	ambiguous := func(tail int) { // a deadline, our acknowledgements, then the peer's next bytes
		now = fastWindow(p, now.Add(p.delay))
		if p.mark <= 1 {
			t.Fatalf("the mark did not rise (level %d)", p.level)
		}
		now = now.Add(p.delay)
		deadline(p, now)
		p.tail = tail
		sends.Add(1)
		now = now.Add(p.delay)
		arrive(p, 64, now)
	}
	ambiguous(4000)
	if p.level != 0 || p.learns != 1 || p.ceil != 2000 {
		t.Fatalf("a 4000-byte window: level %d, %d learned, ceiling %d; want 0, 1, 2000", p.level, p.learns, p.ceil)
	}
	if now = fastWindow(p, now.Add(p.delay)); p.mark != 2000 {
		t.Fatalf("mark %d after learning a 4000-byte window; want 2000", p.mark)
	}
	fillWaits(p, 4*paceMinHits)
	if p.ceil != 2000 {
		t.Fatalf("ceiling %d after %d filled waits within the window; want it kept at 2000", p.ceil, 4*paceMinHits)
	}
	p.unlearn(4000) // a whole window at once: still the window
	fillWaits(p, paceMinHits)
	if p.ceil != 2000 {
		t.Fatalf("ceiling %d after a read of one window; want it kept at 2000", p.ceil)
	}
	p.unlearn(4001) // more than a window without waiting for us: the cap is lifted
	fillWaits(p, paceMinHits)
	if p.ceil != 4000 || p.window != 4000 {
		t.Fatalf("once more than a window came: ceiling %d, window %d; want the ceiling doubled to 4000, the window kept", p.ceil, p.window)
	}

	p, _ = policyPacer(t)
	p.sends = &sends
	ambiguous(4000)
	fillWaits(p, paceMinHits-1)
	ambiguous(3500) // not a quarter smaller, too soon to learn again
	if p.level != 1 || p.learns != 1 || p.narrows != 0 {
		t.Fatalf("a second window %d filled waits later: level %d, %d learned, %d narrowed; want a back-off",
			paceMinHits-1, p.level, p.learns, p.narrows)
	}

	p, _ = policyPacer(t)
	p.sends = &sends
	ambiguous(4000)
	ambiguous(3000) // a quarter smaller: narrowed at once
	if p.level != 0 || p.learns != 1 || p.narrows != 1 || p.ceil != 1500 {
		t.Fatalf("a window a quarter smaller: level %d, %d learned, %d narrowed, ceiling %d; want 0, 1, 1, 1500",
			p.level, p.learns, p.narrows, p.ceil)
	}
	ambiguous(2000) // narrowed again: 1000 is still worth a mark
	ambiguous(1023) // half of it is not: back off
	if p.level != 1 || p.narrows != 2 || p.window != 2000 {
		t.Fatalf("a 1023-byte window: level %d, %d narrowed, window %d; want a back-off, 2, 2000", p.level, p.narrows, p.window)
	}
	checkLearns(t, p)
}

// TestHostileReadPaceVerdictByOurWrites: a deadline the stream had not paid for is judged by
// what comes next. Bytes the peer sent before we began any write show a stream that does not
// wait for us: no back-off, and from then on the mark is the ceiling, not what the rate
// fills in half the bound (the kernel still ends each wait early when the receive window is
// about to close, and the deadline bounds it). Bytes that follow a write of ours may answer
// it: with a tail too small to be a window, the pacer backs off as before, and the marks
// follow the rate again after the quiet period.
func TestHostileReadPaceVerdictByOurWrites(t *testing.T) {
	p, _ := policyPacer(t)
	var sends atomic.Uint64
	p.sends = &sends
	rated := func(mark int) bool { return mark >= 1<<10 && mark <= 2<<10 }
	now := streamWindow(p, time.Now(), 4<<10)
	if !rated(p.mark) {
		t.Fatalf("a stream of 4 KiB per bound: mark %d; want what it fills in half the bound", p.mark)
	}
	for i := range 20 { // a stream that pauses after every window, to a reader that never writes
		now = streamWindow(p, now.Add(p.delay), 4<<10)
		if p.mark <= 1 {
			t.Fatalf("pause %d: the mark did not rise (level %d)", i, p.level)
		}
		now = now.Add(p.delay)
		deadline(p, now)
		now = now.Add(p.delay)
		arrive(p, 64, now)
	}
	if p.level != 0 || p.resumed != 20 {
		t.Fatalf("a stream that went on without us: level %d, %d of 20 deadlines judged pauses", p.level, p.resumed)
	}
	if now = streamWindow(p, now.Add(p.delay), 4<<10); p.mark != p.maxMark {
		t.Fatalf("a stream known not to wait for us: mark %d; want the ceiling %d", p.mark, p.maxMark)
	}
	now = now.Add(p.delay)
	deadline(p, now)
	sends.Add(1) // we answered before the peer sent more
	now = now.Add(p.delay)
	arrive(p, 64, now)
	if p.level != 1 || p.resumed != 20 || p.streams {
		t.Fatalf("a peer that went on after our write: level %d, %d pauses, streams %v; want one back-off", p.level, p.resumed, p.streams)
	}
	for i := range 10 {
		now = fastWindow(p, now)
		if p.mark != 1 {
			t.Fatalf("window %d after the back-off: mark %d; want off for the quiet period", i, p.mark)
		}
	}
	now = streamWindow(p, p.quiet.Add(p.delay), 4<<10)
	if streamWindow(p, now.Add(p.delay), 4<<10); !rated(p.mark) {
		t.Fatalf("after the quiet period: mark %d; want what the rate fills in half the bound again", p.mark)
	}
}

// TestHostileReadPacePeerWaitsMarkOff: a deadline the stream did not pay for with
// paceMinHits filled waits since the last one (a peer that sends a window and waits for our
// answer) keeps the mark off for the quiet period, however fast the windows come. A peer
// that waits for us leaves the tail of each window below any mark, so a lower mark only
// costs the same deadline again (the halving cascade: 16 KiB, 8 KiB, ... 512 B, two
// deadlines at each step). A window of paceMinHits marks or more costs at most one deadline
// per paceMinHits filled waits: bounded, and what a stream that pauses often costs too.
// Design promise: "a peer that waits for us costs a deadline now and then, not one per
// window".
func TestHostileReadPacePeerWaitsMarkOff(t *testing.T) {
	p, _ := policyPacer(t)
	now := fastWindow(p, time.Now())
	if p.mark <= 1 {
		t.Fatalf("a fast stream left the mark at %d", p.mark)
	}
	fillWaits(p, paceMinHits)
	now = now.Add(p.delay)
	deadline(p, now) // a pause in the stream
	now = fastWindow(p, now)
	if p.mark <= 1 {
		t.Fatalf("one deadline kept the mark off (%d): one pause is not a peer waiting", p.mark)
	}
	fillWaits(p, paceMinHits-1)
	now = now.Add(p.delay)
	deadline(p, now) // a window the mark did not pay for: the peer waits for us
	for i := range 10 {
		now = fastWindow(p, now)
		if p.mark != 1 {
			t.Fatalf("window %d after the peer was seen waiting for us: mark %d; want off for the quiet period", i, p.mark)
		}
	}
}

// TestHostileReadPaceSpacedDeadlinesBackOff: deadlines more than ten bounds apart, with no
// wait between them that the stream filled (a peer waiting for an answer that comes later
// than ten bounds: a slow consumer's acknowledgements, a remote broker), are the same
// pattern: after the second the mark stays off, instead of costing a deadline per window
// for as long as the flow lasts.
func TestHostileReadPaceSpacedDeadlinesBackOff(t *testing.T) {
	p, _ := policyPacer(t)
	now := time.Now()
	for i := range 2 {
		now = fastWindow(p, now.Add(20*p.delay))
		if p.mark <= 1 {
			t.Fatalf("window %d: the mark did not rise (%d)", i, p.mark)
		}
		if i == 0 {
			fillWaits(p, paceMinHits) // a stream, then a pause: forgiven
		}
		deadline(p, now.Add(p.delay)) // the second: nothing filled the mark since the first
	}
	fastWindow(p, now.Add(2*p.delay))
	if p.mark != 1 {
		t.Fatalf("after two deadlines with no filled wait between: mark %d; want off", p.mark)
	}
}

// TestHostileReadPaceLevelKeptWhileOff: the back-off level goes down only after a period in
// which the mark was up and paid (waits that filled it). A period spent with the mark off
// (the trickle between a Receive Maximum window's acknowledgements, say) proves nothing: if
// it lowered the level, a peer that waits for us would cost two deadlines every few tens of
// milliseconds for ever instead of a quiet period that grows to its cap.
func TestHostileReadPaceLevelKeptWhileOff(t *testing.T) {
	p, _ := policyPacer(t)
	now := time.Now()
	episode := func() int { // fast windows ending in deadlines until the pacer backs off
		before := p.level
		for i := 0; p.level == before; i++ {
			if i == 10 {
				t.Fatalf("no back-off after 10 windows that each ended at a deadline (level %d)", p.level)
			}
			now = fastWindow(p, now.Add(p.delay))
			if p.mark > 1 {
				now = now.Add(p.delay)
				deadline(p, now)
			}
		}
		return p.level
	}
	first := episode()
	// Long after the quiet period, with the mark off all along: a trickle.
	for end := p.quiet.Add(100 * 10 * time.Millisecond << p.level); now.Before(end); {
		now = slowWindow(p, now.Add(10*p.delay))
	}
	if second := episode(); second <= first {
		t.Fatalf("back-off level %d after the second episode, %d after the first; want it higher", second, first)
	}
}

// TestHostileReadPaceStreamPausesKeepMark: a fast stream that pauses now and then (a wait
// reaches its deadline after many waits the stream filled) keeps its mark: such a pause is
// not a peer waiting for us. Guards the back-off against cutting a healthy stream.
func TestHostileReadPaceStreamPausesKeepMark(t *testing.T) {
	p, _ := policyPacer(t)
	now := time.Now()
	for pause := range 20 {
		for range 40 { // 20 ms of stream between pauses, the mark filled at every read
			now = fastWindow(p, now.Add(p.delay/2))
			fillWaits(p, 2)
		}
		if p.mark <= 1 {
			t.Fatalf("pause %d: mark off in a fast stream (level %d)", pause, p.level)
		}
		now = now.Add(p.delay)
		deadline(p, now)
	}
	if p.level != 0 {
		t.Fatalf("a stream with pauses 20 ms apart backed off to level %d", p.level)
	}
}

// backOffs is the most back-offs a pacer with the default bound can make in elapsed with
// its level never going down: one, then one more per quiet period that has passed (they
// double from 20 ms to 2.56 s, and the next back-off comes after the quiet period at the
// earliest). It grows with the logarithm of the time, then by one per 2.56 s.
func backOffs(elapsed time.Duration) int {
	n := 1
	for level, spent := 1, time.Duration(0); ; level++ {
		spent += 20 * DefaultReadCoalescing << min(level, paceMaxLevel)
		if spent > elapsed {
			return n
		}
		n++
	}
}

// deadlineBound is the most deadlines p may have reached in elapsed: each one either backs
// off (backOffs, plus one more for each time the level went down) or comes after at least
// paceMinHits waits that the stream filled (a pause in a stream the mark pays for) or was
// followed by bytes the peer sent before any write of ours (resumed: it was not waiting for
// us) or taught the pacer the size of the peer's windows (learns, each after paceMinHits
// filled waits, and narrows, each a quarter smaller: both checked by checkDeadlines), and the
// last may still wait for its verdict. The
// design's "a deadline now and then, never one per window", made countable.
func deadlineBound(p *readPacer, elapsed time.Duration) int {
	n := backOffs(elapsed) + p.downs + p.paid/paceMinHits + p.resumed + p.learns + p.narrows
	if p.pending {
		n++ // the last deadline, still waiting for its verdict
	}
	return n
}

// checkDeadlines fails t if a pacer reached more deadlines than deadlineBound allows in
// elapsed. The pacers' readers must have stopped.
func checkDeadlines(t *testing.T, elapsed time.Duration, pacers ...*readPacer) {
	t.Helper()
	for _, p := range pacers {
		bound := deadlineBound(p, elapsed)
		t.Logf("%v: %d deadlines, %d filled waits, %d resumed, %d learned, %d narrowed, level %d (down %d); bound %d",
			elapsed, p.expired, p.paid, p.resumed, p.learns, p.narrows, p.level, p.downs, bound)
		if p.expired > bound {
			t.Errorf("%d deadlines; want at most %d", p.expired, bound)
		}
		checkLearns(t, p)
	}
}

// checkLearns fails t if p learned windows more often than once per paceMinHits filled waits,
// or narrowed them more than maxNarrows times per window learned.
func checkLearns(t *testing.T, p *readPacer) {
	t.Helper()
	if most := p.paid/paceMinHits + 1; p.learns > most {
		t.Errorf("learned from %d deadlines with %d filled waits; want at most %d", p.learns, p.paid, most)
	}
	if most := maxNarrows * p.learns; p.narrows > most {
		t.Errorf("narrowed %d times after %d windows learned; want at most %d", p.narrows, p.learns, most)
	}
}

// stopAndCheck disconnects clients, so that their readers have stopped, and checks the
// pacers' deadlines over the time since start (checkDeadlines).
func stopAndCheck(t *testing.T, start time.Time, clients []*Client, pacers ...*readPacer) {
	t.Helper()
	for _, c := range clients {
		disconnect(t, c)
	}
	checkDeadlines(t, time.Since(start), pacers...)
}

// pacerOf returns the read pacer of c's live connection (nil without one). Its fields are
// the reader's: read them only once c is disconnected.
func pacerOf(t *testing.T, c *Client) *readPacer {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		t.Fatal("not connected")
	}
	return c.conn.pacer
}

// disconnect ends c gracefully, bounded, so that its reader has stopped when it returns.
func disconnect(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestHostileReadPaceSmallReceiveMaximum: a fast QoS 1 or 2 feeder through Mosquitto to a
// subscriber that grants a window of 1 to 5 (WithReceiveMaximum): the broker sends a window
// and waits for our acknowledgements, so a wait for a mark reaches its deadline and stalls
// the flow by the whole bound. (Mosquitto 2.0 overruns the window while acknowledgements
// flow, so part of the flow is a stream that fills the mark.) At most deadlineBound: every
// deadline backs off or was paid for, never one per window. QoS 2 adds the PUBREL/PUBCOMP
// round trip per message. Both clients' pacers are checked (the feeder reads PUBACK or
// PUBREC/PUBCOMP, which it waits for within Mosquitto's window of 20).
// [MQTT-3.3.4-9] the broker sends no more than our Receive Maximum unacknowledged.
func TestHostileReadPaceSmallReceiveMaximum(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	const n = 16000
	for _, qos := range []byte{1, 2} {
		for _, rm := range []uint16{1, 3, 5} {
			t.Run(fmt.Sprintf("qos%d-rm%d", qos, rm), func(t *testing.T) {
				ctx := testCtx(t)
				sub, err := New(WithBroker(b.URL), WithReceiveMaximum(rm))
				if err != nil {
					t.Fatal(err)
				}
				if err := sub.Connect(ctx); err != nil {
					t.Fatal(err)
				}
				var got atomic.Int64
				done := make(chan struct{})
				topic := fmt.Sprintf("pace/rm/%d/%d", qos, rm)
				if _, err := sub.SubscribeCallback(ctx, []TopicFilter{{Topic: topic, QoS: qos}}, func(*Message) {
					if got.Add(1) == n {
						close(done)
					}
				}); err != nil {
					t.Fatal(err)
				}
				pub := newTestClient(t, b.URL)
				subPacer, pubPacer := pacerOf(t, sub), pacerOf(t, pub)
				if subPacer == nil || pubPacer == nil {
					t.Skip("no read coalescing on this system")
				}
				start := time.Now()
				publishInWindows(ctx, t, pub, topic, qos, n, n)
				awaitAll(ctx, t, done, &got, n)
				stopAndCheck(t, start, []*Client{sub, pub}, subPacer, pubPacer)
			})
		}
	}
}

// TestHostileReadPaceRequestReply: QoS 0 requests and replies through Mosquitto, a window of
// requests at a time: the responder reads a window and answers each request, the requester
// sends the next window once every reply is in. Each waits for the other, and nothing is
// acknowledged, so only the answers tell the pacer that a peer waited for us: the deadline at
// the tail of a window is followed by bytes only after a write of ours, and backs off. At
// most deadlineBound for both clients, never one per window.
func TestHostileReadPaceRequestReply(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	const window, windows = 100, 150
	resp := newTestClient(t, b.URL)
	if _, err := resp.SubscribeCallback(ctx, []TopicFilter{{Topic: "pace/rr/req"}}, func(m *Message) {
		// The read loop waits for this callback's next delivery, not for the publish.
		if err := resp.Publish(ctx, PublishOptions{Topic: "pace/rr/rep", Payload: m.Payload}); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	req := newTestClient(t, b.URL)
	replies := make(chan struct{}, window)
	if _, err := req.SubscribeCallback(ctx, []TopicFilter{{Topic: "pace/rr/rep"}}, func(*Message) {
		replies <- struct{}{}
	}); err != nil {
		t.Fatal(err)
	}
	respPacer, reqPacer := pacerOf(t, resp), pacerOf(t, req)
	if respPacer == nil || reqPacer == nil {
		t.Skip("no read coalescing on this system")
	}
	start := time.Now()
	payload := make([]byte, 64)
	for w := range windows {
		toks := make([]*PublishToken, 0, window)
		for range window {
			// QoS 1 to the broker, so that no request is lost on its way in; the
			// subscriptions are QoS 0, so the broker forwards requests and replies at QoS 0.
			tok, err := req.PublishAsync(ctx, PublishOptions{Topic: "pace/rr/req", Payload: payload, QoS: 1})
			if err != nil {
				t.Fatal(err)
			}
			toks = append(toks, tok)
		}
		waitTokens(ctx, t, toks)
		for i := range window {
			select {
			case <-replies:
			case <-ctx.Done():
				t.Fatalf("window %d: %d of %d replies", w, i, window)
			}
		}
	}
	stopAndCheck(t, start, []*Client{resp, req}, respPacer, reqPacer)
}

// TestHostileReadPaceLiveStream: a fast QoS 0 stream through Mosquitto to a subscriber that
// only reads, the case whose marks rise to the ceiling once a pause shows the broker does not
// wait for us. Every message arrives, in order, and the subscriber's deadlines stay within
// deadlineBound (each judged pause is one): the ceiling marks never cost a deadline that is
// not a pause of the stream. The feeder publishes at QoS 1 in windows, so none is lost on
// its way in; the subscription is QoS 0.
func TestHostileReadPaceLiveStream(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	const n, window = 50000, 500
	sub := newTestClient(t, b.URL)
	got := make(chan struct{})
	var next atomic.Int64 // messages in; written by the read loop only
	if _, err := sub.SubscribeCallback(ctx, []TopicFilter{{Topic: "pace/live"}}, func(m *Message) {
		seq := int64(binary.BigEndian.Uint32(m.Payload))
		if want := next.Load(); seq != want {
			t.Errorf("message %d arrived as number %d", seq, want)
		}
		if next.Add(1) == n {
			close(got)
		}
	}, SubInline()); err != nil {
		t.Fatal(err)
	}
	pub := newTestClient(t, b.URL)
	subPacer := pacerOf(t, sub)
	if subPacer == nil {
		t.Skip("no read coalescing on this system")
	}
	start := time.Now()
	publishInWindows(ctx, t, pub, "pace/live", 1, n, window)
	awaitAll(ctx, t, got, &next, n)
	stopAndCheck(t, start, []*Client{sub, pub}, subPacer)
	t.Logf("subscriber: streams %v, mark ceiling %d", subPacer.streams, subPacer.ceil)
}

// publishInWindows publishes n messages of 64 bytes to topic at qos, window at a time: each
// window's publishes are acknowledged before the next begins. Message i carries i in its
// first four bytes (big-endian).
func publishInWindows(ctx context.Context, t *testing.T, pub *Client, topic string, qos byte, n, window int) {
	t.Helper()
	for w := 0; w < n; w += window {
		toks := make([]*PublishToken, 0, window)
		for i := w; i < min(w+window, n); i++ {
			payload := make([]byte, 64)
			binary.BigEndian.PutUint32(payload, uint32(i))
			tok, err := pub.PublishAsync(ctx, PublishOptions{Topic: topic, Payload: payload, QoS: qos})
			if err != nil {
				t.Fatal(err)
			}
			toks = append(toks, tok)
		}
		waitTokens(ctx, t, toks)
	}
}

// awaitAll waits until done is closed (all n messages in), failing t with how many arrived
// (got) if ctx ends first.
func awaitAll(ctx context.Context, t *testing.T, done <-chan struct{}, got *atomic.Int64, n int) {
	t.Helper()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("%d of %d messages arrived", got.Load(), n)
	}
}

// TestHostileReadPaceOwnSocketsOnly: the pacer changes socket options and read deadlines,
// so it acts only on the plain TCP connections the client dials itself. A connection from
// WithDialFunc or a Transport belongs to the code that made it (which may tune, wrap or
// share the socket); TLS and Unix sockets cannot have one. Design promise (DESIGN.md, "Read
// coalescing"): "TLS, WebSocket, Unix sockets and custom DialFunc connections have no pacer".
func TestHostileReadPaceOwnSocketsOnly(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	if p := pacerOf(t, newTestClient(t, b.URL)); p == nil {
		t.Skip("no read coalescing on this system")
	}
	var dialed atomic.Int64
	own := func(ctx context.Context, u *url.URL) (net.Conn, error) {
		dialed.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", u.Host) // a *net.TCPConn, as a custom dialer may return
	}
	c := newTestClient(t, b.URL, WithDialFunc(own))
	if dialed.Load() == 0 {
		t.Fatal("the dial function was not used")
	}
	if p := pacerOf(t, c); p != nil {
		t.Fatal("a WithDialFunc connection has a read pacer")
	}
	// A Transport (here one that carries MQTT over plain TCP for ws://, as a test double of
	// a WebSocket library might) is the same: its connection is its own.
	c = newTestClient(t, "ws://"+b.Addr, WithTransport(tcpTransport{&dialed}))
	if p := pacerOf(t, c); p != nil {
		t.Fatal("a Transport's connection has a read pacer")
	}

	ca := newRedirectCA(t)
	tp := newTLSPeer(t, ca.server(t, 2, nil, loopback))
	c, err := New(WithBroker("mqtts://127.0.0.1:"+tp.port()), WithTLSConfig(&tls.Config{RootCAs: ca.pool}),
		WithReconnectBackoff(ConstantBackoff(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	tpc, _ := startAtPeer(t, tp, c, &packet.Connack{})
	tpc.closeOnEOF()
	if p := pacerOf(t, c); p != nil {
		t.Fatal("a TLS connection has a read pacer")
	}

	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "mqtt.sock"))
	if err != nil {
		t.Fatal(err)
	}
	up := servePeer(t, ln)
	c, err = New(WithBroker("unix://"+ln.Addr().String()), WithReconnectBackoff(ConstantBackoff(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	upc, _ := startAtPeer(t, up, c, &packet.Connack{})
	upc.closeOnEOF()
	if p := pacerOf(t, c); p != nil {
		t.Fatal("a Unix socket connection has a read pacer")
	}
}

// tcpTransport serves ws:// with plain TCP connections.
type tcpTransport struct{ dialed *atomic.Int64 }

func (tcpTransport) Schemes() []string { return []string{"ws"} }

func (tt tcpTransport) Dial(ctx context.Context, u *url.URL, env DialEnv) (net.Conn, error) {
	tt.dialed.Add(1)
	return env.Dialer.DialContext(ctx, "tcp", u.Host)
}
