package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern"
)

// run is one bench run: its clients, counters and histograms. Counters are updated by
// publisher and subscriber goroutines and read by the status line.
type run struct {
	f      *benchFlags
	cond   conditions
	runID  uint64
	base   []tern.Option
	stderr io.Writer

	out, in, acked, unacked, pubErrs, connErrs atomic.Uint64
	firstIn, lastIn                            atomic.Int64 // Unix ns of the first and latest message received
	connsUp                                    atomic.Int64
	e2e, ack, connect                          *latency
	trackers                                   []*tracker
	sentBy                                     []atomic.Uint64 // per publisher

	pubs, subs              []*tern.Client
	heapPerConn, gorPerConn float64
	connsFailed             int

	// started, when set (by tests), is called once the publishers are about to start; it
	// may set beforePublish, which each publisher then calls before each message.
	started       func(*run)
	beforePublish func(client int, seq uint64)
}

// benchHook lets tests watch a run; nil otherwise.
var benchHook func(*run)

// benchSubscribed, when set (by tests), is called once the subscribers of a run have
// subscribed.
var benchSubscribed func()

func newRun(f *benchFlags, stderr io.Writer) (*run, error) {
	broker, opts, err := f.conn.options()
	if err != nil {
		return nil, err
	}
	var id [8]byte
	rand.Read(id[:])
	host, _ := os.Hostname()
	r := &run{f: f, base: opts, stderr: stderr, runID: binary.BigEndian.Uint64(id[:]),
		e2e: newLatency(), ack: newLatency(), connect: newLatency(), started: benchHook}
	r.cond = conditions{Tern: version, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(), GOMAXPROC: runtime.GOMAXPROCS(0), Host: host, Broker: redactURL(broker),
		Started: time.Now().UTC(), Args: f.args, QoS: f.qos, Size: f.size, Rate: f.rate, OpenLoop: f.rate > 0,
		Inflight: f.inflight, ReadCoalescing: f.coalesce.String(), Retain: f.retain, Topic: f.topic, Shared: f.shared, RunID: r.runID}
	switch f.workload {
	case "pub", "conn":
		r.cond.Clients = f.clients
	case "sub":
		r.cond.Subs = f.subs
	case "pubsub":
		r.cond.Clients, r.cond.Subs = f.clients, f.subs
	}
	return r, nil
}

// clientOptions are the options of one bench client: the shared ones, a client id of its
// own, and hooks that keep the connection counters.
func (r *run) clientOptions(kind string, i int) []tern.Option {
	prefix := r.f.conn.id
	if prefix == "" {
		prefix = "tern-bench"
	}
	id := fmt.Sprintf("%s-%x-%s%d", prefix, r.runID&0xFFFFFFFF, kind, i)
	return append(append([]tern.Option(nil), r.base...),
		tern.WithClientID(id),
		tern.WithReadCoalescing(r.f.coalesce),
		tern.WithOnConnectionUp(func(*tern.ConnackInfo) { r.connsUp.Add(1) }),
		tern.WithOnConnectionDown(func(error) bool {
			r.connsUp.Add(-1)
			r.connErrs.Add(1)
			return true
		}),
		tern.WithOnConnectError(func(error) { r.connErrs.Add(1) }),
	)
}

// run runs the workload to its end, or until ctx ends, and builds the report.
func (r *run) run(ctx context.Context, stop func()) (*benchReport, error) {
	status := newStatus(r, r.stderr, r.f.interval)
	defer r.disconnectAll()
	memBase := memSnapshot()
	var err error
	switch r.f.workload {
	case "sub":
		if err = r.connectSubs(ctx); err == nil && benchSubscribed != nil {
			benchSubscribed()
		}
	case "pub":
		r.pubs, r.connsFailed, err = r.connectMany(ctx, "p", r.f.clients, true)
	case "pubsub":
		if err = r.connectSubs(ctx); err == nil {
			r.pubs, r.connsFailed, err = r.connectMany(ctx, "p", r.f.clients, true)
		}
	case "conn":
		status.start()
		r.pubs, r.connsFailed, err = r.connectMany(ctx, "c", r.f.clients, false)
	}
	if err != nil {
		status.stop()
		return nil, err
	}
	if r.f.workload != "conn" {
		r.measureMemory(memBase)
	}
	status.start()
	begin := time.Now()
	var pubEnd time.Time
	switch r.f.workload {
	case "pub", "pubsub":
		if r.started != nil {
			r.started(r)
		}
		pctx := ctx
		if r.f.duration > 0 {
			// A publisher blocked by a stalled broker gives up --wait after the end.
			var cancel context.CancelFunc
			pctx, cancel = context.WithDeadline(ctx, begin.Add(r.f.duration+r.f.wait))
			defer cancel()
		}
		r.publishAll(ctx, pctx, stop, begin)
		pubEnd = time.Now()
		if r.f.workload == "pubsub" {
			r.drain(ctx, stop)
		}
	case "sub":
		r.receiveUntilDone(ctx, begin)
		pubEnd = time.Now()
	case "conn":
		if r.f.duration > 0 {
			t := time.NewTimer(r.f.duration)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		pubEnd = time.Now()
		// After the hold: idle connections have given back their write buffers (1 s).
		r.measureMemory(memBase)
	}
	series := status.stop()
	rep := r.report(begin, pubEnd.Sub(begin), series)
	rep.Interrupted = ctx.Err() != nil
	return rep, nil
}

// connectSubs connects the subscribers and subscribes each to the filter.
func (r *run) connectSubs(ctx context.Context) error {
	shared := r.f.shared != ""
	var one *tracker
	own := r.f.workload == "pubsub" // publishers of this run start at 0
	if shared {
		one = newTracker(own)
		r.trackers = []*tracker{one}
	}
	handlers := make([]func(*tern.Message), r.f.subs)
	for i := range handlers {
		t := one
		if !shared {
			t = newTracker(own)
			r.trackers = append(r.trackers, t)
		}
		handlers[i] = r.handler(i, t)
	}
	// The largest Receive Maximum: a bench subscriber should never be the bottleneck, and
	// mochi (the embedded broker) stalls a subscriber whose window fills (README.md).
	rm := []tern.Option{tern.WithReceiveMaximum(math.MaxUint16)}
	subs, failed, err := r.connectManyWith(ctx, "s", r.f.subs, true, func(int) []tern.Option { return rm },
		func(ctx context.Context, i int, c *tern.Client) error {
			// Inline and zero-copy: the handler only reads the stamp, never blocks (short
			// mutex sections: tracker, histogram shard) and keeps nothing of the message,
			// so it runs on the read loop on the read buffer itself. No copy, no hand-off to
			// a callback goroutine and no wake-up per message: the subscriber's CPU goes
			// to the broker, which sets the pace on a shared machine.
			_, err := c.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: r.f.filter, QoS: byte(r.f.qos)}}, handlers[i],
				tern.SubInline(), tern.SubZeroCopy())
			if err != nil {
				return fmt.Errorf("subscribe %s: %w", r.f.filter, err)
			}
			return nil
		})
	r.subs = subs
	r.connsFailed += failed
	return err
}

// handler checks and times each message one subscriber receives. It runs on the
// subscriber's read loop (SubInline) with a zero-copy message: it must not block or keep
// m or its payload; the client acknowledges m when it returns.
func (r *run) handler(i int, t *tracker) func(*tern.Message) {
	own := r.f.workload == "pubsub"
	return func(m *tern.Message) {
		now := time.Now()
		s, ok := parseStamp(m.Payload)
		if !ok || (own && s.run != r.runID) {
			t.addForeign()
			return
		}
		r.in.Add(1)
		if r.firstIn.Load() == 0 {
			r.firstIn.CompareAndSwap(0, now.UnixNano())
		}
		r.lastIn.Store(now.UnixNano())
		if t.add(s) {
			r.e2e.record(i, now.Sub(time.Unix(0, s.due)))
		}
	}
}

// connectMany connects n clients of a kind; see connectManyWith.
func (r *run) connectMany(ctx context.Context, kind string, n int, all bool) ([]*tern.Client, int, error) {
	return r.connectManyWith(ctx, kind, n, all, nil, nil)
}

// connectManyWith connects n clients, at most --connect-rate a second and 64 dials at a
// time, timing each dial to CONNACK. With all, the first failure ends the run with an
// error (an unreachable broker); otherwise failures are counted (the conn workload).
// after, when set, runs on each client once connected.
func (r *run) connectManyWith(ctx context.Context, kind string, n int, all bool, extra func(int) []tern.Option,
	after func(context.Context, int, *tern.Client) error) ([]*tern.Client, int, error) {
	clients := make([]*tern.Client, n)
	var failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var tick *time.Ticker
	if r.f.connectRate > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / r.f.connectRate))
		defer tick.Stop()
	}
loop:
	for i := 0; i < n; i++ {
		if tick != nil && i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				break loop
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			opts := r.clientOptions(kind, i)
			if extra != nil {
				opts = append(opts, extra(i)...)
			}
			c, err := tern.New(opts...)
			if err == nil {
				t0 := time.Now()
				if err = c.Connect(ctx); err == nil {
					r.connect.record(i, time.Since(t0))
					clients[i] = c
					if after != nil {
						err = after(ctx, i, c)
					}
				} else {
					c.Disconnect(context.Background()) // stops a client left retrying
				}
			}
			if err != nil {
				failed.Add(1)
				if all {
					errOnce.Do(func() { firstErr = fmt.Errorf("client %s%d: %w", kind, i, err); cancel() })
				}
			}
		}(i)
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil && all {
		firstErr = ctx.Err()
	}
	var up []*tern.Client
	for _, c := range clients {
		if c != nil {
			up = append(up, c)
		}
	}
	if firstErr != nil {
		for _, c := range up {
			c.Disconnect(context.Background())
		}
		return nil, int(failed.Load()), firstErr
	}
	return up, int(failed.Load()), nil
}

// publishAll runs every publisher from begin to its end and waits for their acks. Once
// pctx (the publishers' context: runCtx, or the --duration deadline) ends, outstanding
// acknowledgements are waited for --wait at most, so a broker that stopped answering
// cannot hold the run; after an interrupt (runCtx ended) stop releases the signal handler,
// so a second Ctrl-C ends the process.
func (r *run) publishAll(runCtx, pctx context.Context, stop func(), begin time.Time) {
	r.sentBy = make([]atomic.Uint64, len(r.pubs))
	giveUp, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(giveUp)
		select {
		case <-pctx.Done():
		case <-finished:
			return
		}
		if runCtx.Err() != nil {
			stop()
		}
		t := time.NewTimer(r.f.wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-finished:
		}
	}()
	var wg sync.WaitGroup
	for i, c := range r.pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.publisher(pctx, i, c, begin, giveUp)
		}()
	}
	wg.Wait()
	close(finished)
	<-giveUp
}

// window is one QoS 1/2 publish waiting for its acknowledgement.
type window struct {
	tok *tern.PublishToken
	due time.Time
}

// publisher sends one client's messages. In open loop message k is due at begin + k/rate
// and stamped with that time whenever it actually goes out; in closed loop it is stamped
// when it is handed to the client, once the --inflight window has room. giveUp closes when
// acknowledgements still outstanding are no longer waited for.
func (r *run) publisher(ctx context.Context, i int, c *tern.Client, begin time.Time, giveUp <-chan struct{}) {
	f := r.f
	payload := make([]byte, f.size)
	end := time.Time{}
	if f.duration > 0 {
		end = begin.Add(f.duration)
	}
	perSeq := strings.Contains(f.topic, "%n")
	topic := strings.ReplaceAll(f.topic, "%i", strconv.Itoa(i))
	var acks chan window
	var slots, ackDone chan struct{}
	if f.qos > 0 {
		// A slot per unacknowledged publish: taken before PublishAsync, given back by the
		// collector, so at most --inflight are outstanding and the send to acks never waits.
		slots = make(chan struct{}, f.inflight)
		acks = make(chan window, f.inflight)
		ackDone = make(chan struct{})
		go r.collectAcks(i, acks, slots, ackDone, giveUp)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for seq := uint64(0); f.duration > 0 || seq < uint64(f.count); seq++ {
		due := time.Now()
		if f.rate > 0 {
			due = dueAt(begin, seq, f.rate)
			if wait := time.Until(due); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
			}
		}
		if ctx.Err() != nil || (!end.IsZero() && !due.Before(end)) {
			break
		}
		if slots != nil {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			if f.rate == 0 {
				due = time.Now() // closed loop: timed from the send, not from the wait for room
			}
		}
		if r.beforePublish != nil {
			r.beforePublish(i, seq)
		}
		stamp{run: r.runID, client: uint32(i), seq: seq, due: due.UnixNano()}.put(payload)
		t := topic
		if perSeq {
			t = strings.ReplaceAll(topic, "%n", strconv.FormatUint(seq, 10))
		}
		m := tern.PublishOptions{Topic: t, QoS: byte(f.qos), Retain: f.retain, Payload: payload}
		if f.qos == 0 {
			if err := c.Publish(ctx, m); err != nil {
				r.pubErrs.Add(1)
				continue
			}
		} else {
			tok, err := c.PublishAsync(ctx, m)
			if err != nil {
				<-slots
				r.pubErrs.Add(1)
				continue
			}
			// Counted before the collector can see a refusal, which takes it back. Every
			// token goes to the collector (room is reserved), which gives up on it at the
			// latest at giveUp.
			r.sentBy[i].Add(1)
			r.out.Add(1)
			acks <- window{tok, due}
			continue
		}
		r.sentBy[i].Add(1)
		r.out.Add(1)
	}
	if acks != nil {
		close(acks)
		<-ackDone
	}
}

// collectAcks waits for a publisher's tokens in send order and times each from its due
// time. Brokers acknowledge in order, so waiting in order delays no measurement. Tokens
// still outstanding when giveUp closes count as unacknowledged (still sent: the broker
// may have taken them).
func (r *run) collectAcks(i int, acks <-chan window, slots <-chan struct{}, done chan<- struct{}, giveUp <-chan struct{}) {
	defer close(done)
	for w := range acks {
		r.awaitAck(i, w, giveUp)
		<-slots
	}
}

// awaitAck waits for one token (at most until giveUp) and counts its outcome.
func (r *run) awaitAck(i int, w window, giveUp <-chan struct{}) {
	select {
	case <-w.tok.Done():
	case <-giveUp:
		select {
		case <-w.tok.Done():
		default:
			r.unacked.Add(1)
			return
		}
	}
	if err := w.tok.Err(); err != nil {
		// Refused or failed: not sent as far as the receivers' count goes.
		r.sentBy[i].Add(^uint64(0))
		r.out.Add(^uint64(0))
		r.pubErrs.Add(1)
		return
	}
	r.ack.record(i, time.Since(w.due))
	r.acked.Add(1)
}

// expected is the number of messages the receiving sides should get in pubsub.
func (r *run) expected() uint64 {
	var sent uint64
	for i := range r.sentBy {
		sent += r.sentBy[i].Load()
	}
	return sent * uint64(len(r.trackers))
}

// drain waits for the messages still in flight: until every expected one arrived, or none
// arrived for --wait. After an interrupt it waits --wait at most, and a second one ends
// the process.
func (r *run) drain(ctx context.Context, stop func()) {
	if ctx.Err() != nil {
		stop()
	}
	want := r.expected()
	quietFor(r.f.wait, func() bool { return r.received() >= want }, &r.in)
}

// received counts distinct messages over all receiving sides.
func (r *run) received() uint64 {
	var n uint64
	for _, t := range r.trackers {
		t.mu.Lock()
		for _, p := range t.pubs {
			n += p.distinct
		}
		t.mu.Unlock()
	}
	return n
}

// quietFor returns when done reports true, or when counter has not moved for quiet.
func quietFor(quiet time.Duration, done func() bool, counter *atomic.Uint64) {
	const poll = 10 * time.Millisecond
	last, since := counter.Load(), time.Now()
	for !done() {
		if n := counter.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
		time.Sleep(poll) // polling counters the subscribers keep
	}
}

// receiveUntilDone is the sub workload: it ends at --duration, at -n messages per
// subscriber, at --wait without a message once messages have come, or at ctx.
func (r *run) receiveUntilDone(ctx context.Context, begin time.Time) {
	const poll = 10 * time.Millisecond
	var end time.Time
	if r.f.duration > 0 {
		end = begin.Add(r.f.duration)
	}
	want := uint64(0)
	if r.f.countGiven {
		want = uint64(r.f.count) * uint64(len(r.trackers)) // per subscriber, or per shared group
	}
	last, since := uint64(0), time.Now()
	for ctx.Err() == nil {
		n := r.in.Load()
		switch {
		case !end.IsZero() && !time.Now().Before(end):
			return
		case want > 0 && n >= want:
			return
		case n != last:
			last, since = n, time.Now()
		case n > 0 && time.Since(since) >= r.f.wait:
			return
		}
		time.Sleep(poll) // polling counters the subscribers keep
	}
}

// disconnectAll disconnects every client, many at a time.
func (r *run) disconnectAll() {
	all := append(append([]*tern.Client(nil), r.pubs...), r.subs...)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, c := range all {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.Disconnect(ctx)
		}()
	}
	wg.Wait()
	r.pubs, r.subs = nil, nil
}

// report builds the report of the run; took is the publishing (or receiving) time. The
// receive rate counts from begin to the last message received; in sub, which may wait for
// its publishers, from the first message received.
func (r *run) report(begin time.Time, took time.Duration, series []seriesPoint) *benchReport {
	rep := &benchReport{Workload: r.f.workload, Conditions: r.cond, Duration: took.Seconds(),
		Sent: r.out.Load(), PublishErrors: r.pubErrs.Load(), Acked: r.acked.Load(), Unacked: r.unacked.Load(), Received: r.in.Load(),
		ConnsUp: int(r.connsUp.Load()), ConnsFailed: r.connsFailed, ConnErrors: r.connErrs.Load(),
		HeapPerConn: r.heapPerConn, GoroutinesPerCon: r.gorPerConn, Series: series}
	if s := took.Seconds(); s > 0 {
		rep.OutRate = float64(rep.Sent) / s
	}
	from := begin.UnixNano()
	if first := r.firstIn.Load(); r.f.workload == "sub" && first > 0 {
		from = first
	}
	if last := r.lastIn.Load(); last > from {
		rep.ReceiveTime = time.Duration(last - from).Seconds()
		rep.InRate = float64(rep.Received) / rep.ReceiveTime
	}
	var local map[pubKey]uint64
	if r.f.workload == "pubsub" {
		local = make(map[pubKey]uint64, len(r.sentBy))
		for i := range r.sentBy {
			local[pubKey{r.runID, uint32(i)}] = r.sentBy[i].Load()
		}
		rep.Expected = r.expected()
	}
	for _, t := range r.trackers {
		for _, v := range t.verdicts(local) {
			rep.Lost += v.Lost
			rep.Duplicates += v.Duplicates
			rep.Reordered += v.Reordered
			if (v.Lost > 0 || v.Duplicates > 0 || v.Reordered > 0) && len(rep.Publishers) < maxListed {
				rep.Publishers = append(rep.Publishers, v)
			}
		}
		t.mu.Lock()
		rep.Foreign += t.foreign
		t.mu.Unlock()
	}
	rep.Latency = rep.setHist("latency", r.e2e.merged())
	rep.AckLatency = rep.setHist("ack", r.ack.merged())
	rep.Connect = rep.setHist("connect", r.connect.merged())
	return rep
}

// memSample is the heap in use and the goroutines of this process.
type memSample struct {
	heap uint64
	gor  int
}

func memSnapshot() memSample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapInuse, gor: runtime.NumGoroutine()}
}

// measureMemory sets the per-connection cost from the growth since base, with every
// client connected and idle.
func (r *run) measureMemory(base memSample) {
	n := len(r.pubs) + len(r.subs)
	if n == 0 {
		return
	}
	now := memSnapshot()
	if now.heap > base.heap {
		r.heapPerConn = float64(now.heap-base.heap) / float64(n)
	}
	r.gorPerConn = float64(now.gor-base.gor) / float64(n)
}

// errFDLimit names the fix when the process may not open enough connections.
var errFDLimit = errors.New("file descriptor limit too low")

// dueAt is when message seq of an open-loop publisher at rate messages a second is due:
// begin + seq/rate, computed whole rather than as seq rounded intervals, which would drift.
func dueAt(begin time.Time, seq uint64, rate float64) time.Time {
	ns := float64(seq) * float64(time.Second) / rate
	if ns >= 9e18 { // beyond a Duration; the flag checks keep runs far shorter
		return begin.Add(math.MaxInt64)
	}
	return begin.Add(time.Duration(ns))
}
