package tern

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// Helpers for the fault tests (fault_test.go): a sink that records which numbered messages
// arrived and how often, a pool of publishers that numbers its messages, and a recorder of a
// client's lifecycle callbacks. Everything waits on events with a deadline.

// endMarker is the payload of the message a test publishes after all numbered ones: the
// broker delivers a subscriber's messages in order, so once it arrives every earlier copy
// (resends included) has arrived too.
const endMarker = "end"

// faultCtx returns a context for a whole fault test, cancelled at cleanup.
func faultCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fastReconnect keeps the gap between a cut and the next attempt short and constant, so a
// test with many cuts spends its time on traffic, not on backoff.
func fastReconnect() Option { return WithReconnectBackoff(ConstantBackoff(20 * time.Millisecond)) }

// seqSink records the sequence numbers [0, n) delivered by one or more subscriptions (its
// sources), with the count of each per source. Payloads are decimal numbers, or endMarker.
type seqSink struct {
	n int

	mu       sync.Mutex
	counts   [][]int32 // [source][seq]: deliveries
	union    []int32   // [seq]: deliveries over all sources
	distinct int       // numbers delivered at least once by some source
	dupQoS   [3]int    // deliveries beyond the first, by the QoS they arrived with
	marks    []int     // [source]: end markers received
	stray    []string  // payloads that are neither a number in range nor the marker
	changed  chan struct{}
}

func newSeqSink(n, sources int) *seqSink {
	s := &seqSink{n: n, union: make([]int32, n), marks: make([]int, sources), changed: make(chan struct{})}
	for range sources {
		s.counts = append(s.counts, make([]int32, n))
	}
	return s
}

// drain records every message of ch as coming from src and acknowledges it, until ch is
// closed (the client's Disconnect closes it, so the goroutine running drain ends with the
// test's cleanup).
func (s *seqSink) drain(src int, ch <-chan *Message) {
	for m := range ch {
		s.record(src, m)
		m.Ack() // a no-op under SubAutoAck
	}
}

func (s *seqSink) record(src int, m *Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.notifyLocked()
	p := string(m.Payload)
	if p == endMarker {
		s.marks[src]++
		return
	}
	seq, err := strconv.Atoi(p)
	if err != nil || seq < 0 || seq >= s.n {
		s.stray = append(s.stray, p)
		return
	}
	s.counts[src][seq]++
	s.union[seq]++
	if s.union[seq] == 1 {
		s.distinct++
	} else if m.QoS <= 2 {
		s.dupQoS[m.QoS]++
	}
}

func (s *seqSink) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor waits until cond, called with the sink locked, holds or ctx ends. It reports
// whether cond held.
func (s *seqSink) waitFor(ctx context.Context, cond func() bool) bool {
	for {
		s.mu.Lock()
		ok, ch := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// Conditions for waitFor; the sink is locked when they run.

func (s *seqSink) allSeen() bool { return s.distinct == s.n }

func (s *seqSink) marked(src int) bool { return s.marks[src] > 0 }

func (s *seqSink) rangeSeen(src, lo, hi int) bool {
	for seq := lo; seq < hi; seq++ {
		if s.counts[src][seq] == 0 {
			return false
		}
	}
	return true
}

// waitAll waits, bounded by d, until every number has arrived and the end marker has arrived
// on every source in marks, and fails t with a summary if not.
func (s *seqSink) waitAll(t *testing.T, d time.Duration, marks ...int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ok := s.waitFor(ctx, func() bool {
		for _, src := range marks {
			if !s.marked(src) {
				return false
			}
		}
		return s.allSeen()
	})
	if !ok {
		t.Fatalf("after %v: %s", d, s.summary())
	}
}

// missing returns the numbers no source delivered.
func (s *seqSink) missing() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for seq, c := range s.union {
		if c == 0 {
			out = append(out, seq)
		}
	}
	return out
}

// repeated returns the numbers delivered more than once, over all sources.
func (s *seqSink) repeated() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for seq, c := range s.union {
		if c > 1 {
			out = append(out, seq)
		}
	}
	return out
}

// deliveries returns how often seq was delivered, over all sources.
func (s *seqSink) deliveries(seq int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.union[seq])
}

// dups returns the deliveries beyond the first of each number, by QoS.
func (s *seqSink) dups() [3]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dupQoS
}

func (s *seqSink) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var miss []string
	nmiss := 0
	for seq, c := range s.union {
		if c == 0 {
			nmiss++
			if len(miss) < 20 {
				miss = append(miss, strconv.Itoa(seq))
			}
		}
	}
	return fmt.Sprintf("received %d of %d distinct numbers, markers %v, duplicates by QoS %v, %d missing (first: %s), stray payloads %q",
		s.distinct, s.n, s.marks, s.dupQoS, nmiss, strings.Join(miss, " "), s.stray)
}

// strays returns payloads that were not expected at all.
func (s *seqSink) strays() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.stray...)
}

// pubResult is what a publishSeq run saw: how often each Publish call returned, and the
// errors.
type pubResult struct {
	returns []atomic.Int32 // [seq - lo]: returns of the Publish call for seq
	ok      atomic.Int64   // returns with nil
	mu      sync.Mutex
	errs    []string // the first few errors, with their sequence numbers
	nerr    int
	elapsed time.Duration
}

// publishSeq publishes the numbers [lo, hi) from workers goroutines, each number once, with
// msg giving the topic and QoS (the payload is the number). It returns when every call has
// returned. progress, if not nil, runs after each successful call with the number of
// successes so far, on the publishing goroutine; it must not block.
func publishSeq(ctx context.Context, c *Client, lo, hi, workers int, msg func(seq int) PublishOptions, progress func(done int64)) *pubResult {
	r := &pubResult{returns: make([]atomic.Int32, hi-lo)}
	start := time.Now()
	var next atomic.Int64
	next.Store(int64(lo))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				seq := int(next.Add(1) - 1)
				if seq >= hi {
					return
				}
				m := msg(seq)
				m.Payload = strconv.AppendInt(nil, int64(seq), 10)
				err := c.Publish(ctx, m)
				r.returns[seq-lo].Add(1)
				if err != nil {
					r.mu.Lock()
					r.nerr++
					if len(r.errs) < 10 {
						r.errs = append(r.errs, fmt.Sprintf("seq %d: %v", seq, err))
					}
					r.mu.Unlock()
					if ctx.Err() != nil {
						return // the test's deadline: the rest would fail the same way
					}
					continue
				}
				done := r.ok.Add(1)
				if progress != nil {
					progress(done)
				}
			}
		})
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

// check fails t unless every call returned exactly once, with nil.
func (r *pubResult) check(t *testing.T, what string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nerr > 0 {
		t.Errorf("%s: %d of %d publishes failed; first: %s", what, r.nerr, len(r.returns), strings.Join(r.errs, "; "))
	}
	bad := 0
	for i := range r.returns {
		if n := r.returns[i].Load(); n != 1 {
			if bad < 5 {
				t.Errorf("%s: publish #%d returned %d times, want exactly once", what, i, n)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d publishes did not return exactly once", what, bad)
	}
}

// lifecycle records a client's lifecycle callbacks on buffered channels. Callbacks must not
// block, so an event that finds its channel full is dropped; the buffers are far larger than
// any test needs for the events it waits on.
type lifecycle struct {
	up      chan *ConnackInfo
	down    chan downEvent
	connErr chan error
}

type downEvent struct {
	at  time.Time
	err error
}

func newLifecycle() *lifecycle {
	return &lifecycle{
		up:      make(chan *ConnackInfo, 256),
		down:    make(chan downEvent, 256),
		connErr: make(chan error, 256),
	}
}

// options returns the callbacks to pass to New. The down callback always asks to reconnect.
func (l *lifecycle) options() []Option {
	return []Option{
		WithOnConnectionUp(func(i *ConnackInfo) {
			select {
			case l.up <- i:
			default:
			}
		}),
		WithOnConnectionDown(func(err error) bool {
			select {
			case l.down <- downEvent{at: time.Now(), err: err}:
			default:
			}
			return true
		}),
		WithOnConnectError(func(err error) {
			select {
			case l.connErr <- err:
			default:
			}
		}),
	}
}

var errNoEvent = errors.New("no event before the deadline")

// waitUp returns the next connection-up event, or fails t after d.
func (l *lifecycle) waitUp(t *testing.T, d time.Duration, what string) *ConnackInfo {
	t.Helper()
	select {
	case i := <-l.up:
		return i
	case <-time.After(d):
		t.Fatalf("%s: no connection up within %v", what, d)
	}
	return nil
}

// waitDown returns the next connection-down event, or fails t after d.
func (l *lifecycle) waitDown(t *testing.T, d time.Duration, what string) downEvent {
	t.Helper()
	select {
	case e := <-l.down:
		return e
	case <-time.After(d):
		t.Fatalf("%s: no connection down within %v", what, d)
	}
	return downEvent{}
}

// waitConnErr returns the next failed connection attempt, or errNoEvent after d.
func (l *lifecycle) waitConnErr(d time.Duration) error {
	select {
	case err := <-l.connErr:
		return err
	case <-time.After(d):
		return errNoEvent
	}
}

// failureLog returns a logger for a client whose output t shows only if the test fails, to
// explain a failure that is hard to reproduce. Pass it before the client is created, so its
// cleanup runs after the client's Disconnect and shows the whole story.
func failureLog(t *testing.T, name string) Option {
	var buf bytes.Buffer
	var mu sync.Mutex
	h := slog.NewTextHandler(lockedWriter{&buf, &mu}, &slog.HandlerOptions{Level: slog.LevelInfo})
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("%s log (tail):\n%s", name, tail(buf.String(), 6000))
		}
	})
	return WithLogger(slog.New(h))
}

// brokerLogOnFailure shows the end of b's log if t fails.
func brokerLogOnFailure(t *testing.T, b *brokertest.Mosquitto) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log (tail):\n%s", tail(b.Log(), 6000))
		}
	})
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// waitTokens waits for every token and fails the test on the first error.
func waitTokens(ctx context.Context, t *testing.T, toks []*PublishToken) {
	t.Helper()
	for _, tok := range toks {
		if err := tok.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
