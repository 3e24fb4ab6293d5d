package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/cmd/tern/internal/broker"
	"github.com/ternmq/tern/internal/faultproxy"
)

// demoConfig is what tern demo is asked to do. The zero value of a field means its default.
type demoConfig struct {
	Broker      string        // external broker URL (mqtt:// or tcp://); "": the embedded one
	Messages    int           // how many messages to publish
	QoS         int           // 1, 2, or 12 for odd sequence numbers at QoS 1 and even at QoS 2
	Cuts        int           // connection cuts spread over the run
	Dir         string        // the durable queue's directory; "": a temporary one
	Restart     bool          // restart the embedded broker once mid-run
	MaxInflight uint16        // Receive Maximum the embedded broker grants; 0: mochi's 1024
	Wait        time.Duration // how long to wait without progress before giving up
	PayloadSize int           // bytes per message, at least 16
	// RaceMochi turns off the ordering that keeps the demo clear of a mochi session
	// takeover race after a restart (see faultPlan.restart), to show that race.
	RaceMochi bool
	// wrap, when set, wraps the queue publisher: tests inject stalls and failures with it.
	wrap func(queuePublisher) queuePublisher

	Progress io.Writer // progress output (stderr); nil: none
	TTY      bool      // Progress is a terminal: redraw one line
	Verbose  bool      // -v: the raw last error even on a PASS
}

// demoReport is the outcome of a demo run.
type demoReport struct {
	Publisher     string // which publisher ran
	Broker        string // which broker
	Wanted        int    // messages the run was asked to publish
	Sent          int    // messages accepted (stored) by Publish
	Acked         int64  // acknowledged by the broker (resends counted once)
	Waiting       int    // still in the durable queue at the end
	seqCount             // what the receiver got, compared with what was accepted
	Cuts          int    // cuts made
	CutConns      int    // connections those cuts closed
	Restarts      int    // broker restarts made
	RxFirst       bool   // the publisher was held back after a restart until the receiver resumed
	RestartError  error  // why a restart failed
	StuckCloses   int64  // broker closes that had to be forced (see broker.Close)
	CloseError    error  // the embedded broker's Close, when it failed or was abandoned
	PubUps        int64  // publisher connections established
	RxUps         int64  // receiver connections established
	RxSessionLost int64  // receiver reconnects that found no session
	Elapsed       time.Duration
	Stalled       string // why the run stopped early or stopped waiting, when it did
	LastError     error  // the publisher's most recent problem
	Retries       int64  // refusals the queue publisher absorbed by sending again
	TxSessionLost int64  // publisher reconnections that found no session
	Interrupted   bool   // the user stopped the run (Ctrl-C)
	Dir           string // the durable queue's directory, when the user chose it
	Verbose       bool   // print the raw last error even on a PASS
}

// failures returns why the run failed; none means it passed. A run passes only when every
// message it was asked for was accepted, nothing stopped it early, and every accepted
// sequence number arrived.
func (r *demoReport) failures() []string {
	var why []string
	if r.Interrupted {
		return []string{"interrupted"}
	}
	if r.Stalled != "" {
		why = append(why, "stopped early: "+r.Stalled)
	}
	if r.Sent < r.Wanted {
		why = append(why, fmt.Sprintf("only %d of %d messages accepted by the publisher", r.Sent, r.Wanted))
	}
	if r.Lost > 0 {
		why = append(why, fmt.Sprintf("%d of %d accepted messages lost (never received)", r.Lost, r.Sent))
	}
	return why
}

const (
	demoTopicPrefix = "tern/demo/"
	demoRxID        = "tern-demo-rx"
	demoTxID        = "tern-demo-tx"
)

func runDemoCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", "[flags]", `Publishes many QoS 1 and 2 messages through a durable queue while the connection is
cut and the broker restarted, and counts what a second connection receives: the run
passes when nothing is lost. Without --broker it starts the embedded broker on a free
loopback port. Exit status 0 pass, 1 a message lost (or the run could not go on), 2 a usage
error, 130 interrupted (Ctrl-C: the report counts what was stored, acknowledged and
received; --dir keeps the queue).`, stderr)
	cfg := demoConfig{}
	fs.StringVar(&cfg.Broker, "broker", "", "external broker `URL` (mqtt://host:port, tcp://host:port, ws://host:port/path or host:port); default: start the embedded broker")
	fs.BoolVar(&cfg.Verbose, "v", false, "show the raw last error of the publisher even when the run passes")
	fs.IntVar(&cfg.Messages, "messages", 20000, "how many messages to publish")
	qos := fs.String("qos", "12", "QoS of the messages: 1, 2, or 12 for half QoS 1 and half QoS 2")
	fs.IntVar(&cfg.Cuts, "cuts", 5, "how many times to cut the publisher's connection, spread over the run")
	fs.StringVar(&cfg.Dir, "dir", "", "`directory` of the durable queue (default: a temporary directory, removed at the end)")
	fs.BoolVar(&cfg.Restart, "restart", true, "restart the embedded broker once mid-run")
	maxInflight := fs.Int("max-inflight", 0, "Receive Maximum the embedded broker grants each client (0: mochi's 1024)")
	fs.DurationVar(&cfg.Wait, "wait", 90*time.Second, "give up after this long without progress")
	fs.BoolVar(&cfg.RaceMochi, "race-mochi", false, "after the restart let the publisher reconnect at once, exposing a mochi session-takeover race that loses messages (see README)")
	if st := parseFlags(fs, args); st >= 0 {
		return st
	}
	switch *qos {
	case "1", "2", "12":
		fmt.Sscan(*qos, &cfg.QoS)
	default:
		fmt.Fprintf(stderr, "tern demo: --qos must be 1, 2 or 12\n")
		return 2
	}
	if cfg.Messages < 1 || cfg.Cuts < 0 || *maxInflight < 0 || *maxInflight > math.MaxUint16 {
		fmt.Fprintf(stderr, "tern demo: --messages must be positive, --cuts not negative, --max-inflight in [0, 65535]\n")
		return 2
	}
	cfg.MaxInflight = uint16(*maxInflight)
	if cfg.Broker != "" {
		u, err := parseBrokerArg(cfg.Broker)
		if err == nil && u.Scheme != "mqtt" && u.Scheme != "tcp" && u.Scheme != "ws" {
			err = usagef("broker %q: the demo proxies plain TCP only (mqtt://, tcp://, ws:// or host:port)", cfg.Broker)
		}
		if err != nil {
			fmt.Fprintf(stderr, "tern demo: --%v\n", err)
			return 2
		}
		cfg.Broker = u.String()
	}
	cfg.Progress = stderr
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			cfg.TTY = true
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.wrap = demoWrapHook
	rep, err := runDemo(ctx, cfg)
	if err != nil && ctx.Err() != nil {
		fmt.Fprintf(stderr, "tern demo: interrupted while setting up: %v\n", err)
		return exitInterrupted
	}
	if err != nil {
		fmt.Fprintf(stderr, "tern demo: %v\n", err)
		return 1
	}
	rep.print(stdout)
	switch {
	case rep.Interrupted:
		return exitInterrupted
	case len(rep.failures()) > 0:
		return 1
	}
	return 0
}

// demoWrapHook is demoConfig.wrap for runs from the command line; nil except in tests.
var demoWrapHook func(queuePublisher) queuePublisher

// runDemo runs the demonstration and reports what the receiver got. It returns an error
// only when the run could not be set up; losses are in the report.
func runDemo(ctx context.Context, cfg demoConfig) (*demoReport, error) {
	if cfg.Messages < 1 {
		return nil, errors.New("need at least one message")
	}
	if cfg.QoS == 0 {
		cfg.QoS = 12
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 90 * time.Second
	}
	if cfg.PayloadSize < 16 {
		cfg.PayloadSize = 64
	}
	rep := &demoReport{Wanted: cfg.Messages}

	// The broker, embedded unless one is given, and the proxy that cuts the publisher.
	brk, brokerURL, err := startBroker(cfg, rep)
	if err != nil {
		return nil, err
	}
	if brk != nil {
		defer func() {
			rep.CloseError = brk.Close()
			rep.StuckCloses = brk.StuckCloses()
		}()
	}
	target, err := hostPort(brokerURL)
	if err != nil {
		return nil, err
	}
	px, err := faultproxy.Start("127.0.0.1:0", target)
	if err != nil {
		return nil, err
	}
	defer px.Close()

	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "tern-demo-*"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}

	// The clients and the queue publisher.
	tl := newTally(rand.Uint64(), cfg.Messages)
	var ups connCounts
	rx, err := connectReceiver(ctx, brokerURL, tl, &ups)
	if err != nil {
		return nil, err
	}
	defer endSession(rx)
	tx, err := connectPublisher(ctx, viaProxy(brokerURL, px.Addr()), &ups)
	if err != nil {
		return nil, err
	}
	defer endSession(tx)
	qp, closeQueue, pubName, err := openPublisher(tx, dir)
	if err != nil {
		return nil, err
	}
	rep.Publisher = pubName
	defer closeQueue()
	if cfg.wrap != nil {
		qp = cfg.wrap(qp)
	}

	// Faults, spread over the messages received.
	restart := cfg.Restart && brk != nil
	var rxFirst func() int64
	if !cfg.RaceMochi {
		rxFirst = ups.rx.Load
	}
	faults := newFaultPlan(cfg.Messages, cfg.Cuts, restart, px, brk, rxFirst)
	rep.RxFirst = restart && rxFirst != nil

	published, stalled, elapsed := drive(ctx, cfg, qp, tl, faults, restart)

	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	qp.Close(cctx)
	cancel()

	st := qp.Stats()
	rep.Sent, rep.Acked, rep.Waiting, rep.LastError = published, st.Delivered, st.Depth, st.LastError
	rep.Stalled, rep.Elapsed = stalled, elapsed
	rep.seqCount = tl.compare()
	rep.Cuts, rep.CutConns, rep.Restarts = faults.done()
	rep.RestartError = faults.restartErr
	rep.PubUps, rep.RxUps, rep.RxSessionLost = ups.tx.Load(), ups.rx.Load(), ups.rxLost.Load()
	rep.TxSessionLost, rep.Retries = ups.txLost.Load(), st.Retries
	rep.Interrupted = ctx.Err() != nil
	rep.Dir, rep.Verbose = cfg.Dir, cfg.Verbose
	return rep, nil
}

// startBroker starts the embedded broker unless cfg names one, and returns it (nil for an
// external one) with the URL the clients use.
func startBroker(cfg demoConfig, rep *demoReport) (*broker.Broker, string, error) {
	if cfg.Broker != "" {
		rep.Broker = cfg.Broker
		if cfg.Restart {
			rep.Broker += " (not restarted: only the embedded broker can be)"
		}
		return nil, cfg.Broker, nil
	}
	brk, err := broker.Start("127.0.0.1:0", broker.Options{MaxInflight: cfg.MaxInflight})
	if err != nil {
		return nil, "", err
	}
	rep.Broker = "embedded mochi-mqtt v2.7.9 at " + brk.Addr()
	return brk, brk.URL(), nil
}

// drive publishes every message with the faults on the way, then waits for the
// acknowledgements and for the receiver, showing progress meanwhile. It returns how many
// messages were accepted, why it stopped early (or ""), and how long it took.
//
// A watchdog bounds the publishing phase: when neither accepted, acknowledged nor received
// counts move for cfg.Wait while messages remain, it cancels the publishers with the
// counts as the reason, so a broker that stops acknowledging ends the run with FAIL
// instead of a hang.
func drive(ctx context.Context, cfg demoConfig, qp queuePublisher, tl *tally, faults *faultPlan, restart bool) (int, string, time.Duration) {
	prog := &progress{w: cfg.Progress, tty: cfg.TTY, total: cfg.Messages, cuts: cfg.Cuts, restart: restart}
	pctx, stopProgress := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		prog.run(pctx, start, qp, tl, faults)
	}()

	published, stalled := publishWatched(ctx, qp, cfg, tl, faults)
	// After a publish error, what was accepted is still owed: wait for it, so that lost
	// counts messages that did not arrive, not messages still on their way. After a stall
	// or an interruption, waiting again would only repeat it.
	if ctx.Err() == nil && !strings.HasPrefix(stalled, stallPrefix) {
		if w := waitAcked(ctx, qp, cfg.Wait); stalled == "" {
			stalled = w
		}
		if w := waitReceived(ctx, tl, cfg.Wait); stalled == "" {
			stalled = w
		}
	}
	elapsed := time.Since(start)
	stopProgress()
	<-done
	prog.finish()
	return published, stalled, elapsed
}

// stallPrefix starts the reason the watchdog gives when publishing made no progress.
const stallPrefix = "no progress for "

// publishWatched runs publishAll under a watchdog that cancels it, with a reason that
// carries the counts, when nothing moves for cfg.Wait while messages remain.
func publishWatched(ctx context.Context, qp queuePublisher, cfg demoConfig, tl *tally, faults *faultPlan) (int, string) {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watched := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(watched)
		why := waitProgress(wctx, cfg.Wait, func() (int64, bool) {
			st := qp.Stats()
			accepted, got := tl.progress()
			select {
			case <-stop:
				return 0, true
			default:
			}
			return int64(accepted) + st.Delivered + int64(got), false
		}, "")
		if why != "" && wctx.Err() == nil {
			st := qp.Stats()
			accepted, got := tl.progress()
			cancel(fmt.Errorf("%s%v while %d of %d messages remain: accepted %d, acknowledged %d, received %d",
				stallPrefix, cfg.Wait, cfg.Messages-accepted, cfg.Messages, accepted, st.Delivered, got))
		}
	}()
	published, why := publishAll(wctx, qp, cfg, tl, faults)
	close(stop)
	<-watched
	if cause := context.Cause(wctx); cause != nil && ctx.Err() == nil {
		why = cause.Error() // the watchdog's reason, not the cancellation it caused
	}
	return published, why
}

// connCounts counts the connections the demo's clients make.
type connCounts struct {
	rx, tx atomic.Int64
	rxLost atomic.Int64 // receiver reconnections that found no session
	txLost atomic.Int64 // publisher reconnections that found no session
}

// fast is the demo's reconnect backoff: faults are frequent and the broker is local.
var fast = tern.ExponentialBackoff{Min: 10 * time.Millisecond, Max: 500 * time.Millisecond, Jitter: 0.2}

// connectReceiver connects the receiver straight to the broker with a persistent session and
// subscribes it to every demo topic, counting each message in tl.
func connectReceiver(ctx context.Context, url string, tl *tally, ups *connCounts) (*tern.Client, error) {
	rx, err := tern.New(
		tern.WithBroker(url), wsTransport,
		tern.WithClientID(demoRxID),
		tern.WithCleanStart(false),
		tern.WithSessionExpiry(time.Hour),
		tern.WithReconnectBackoff(fast),
		tern.WithConnectTimeout(5*time.Second),
		// mochi does not keep to a subscriber's Receive Maximum: it resends a whole resumed
		// session at once and can stall when the window fills (README.md). Allow the most.
		tern.WithReceiveMaximum(math.MaxUint16),
		tern.WithOnConnectionUp(func(info *tern.ConnackInfo) {
			if ups.rx.Add(1) > 1 && !info.SessionPresent {
				ups.rxLost.Add(1)
			}
		}),
	)
	if err != nil {
		return nil, err
	}
	if err := rx.Connect(ctx); err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	if _, err := rx.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: demoTopicPrefix + "#", QoS: 2}}, tl.add); err != nil {
		endSession(rx)
		return nil, fmt.Errorf("receiver: %w", err)
	}
	return rx, nil
}

// connectPublisher connects the publisher, through the proxy at url, with a session of its
// own so that a reconnect resends what was in flight.
func connectPublisher(ctx context.Context, url string, ups *connCounts) (*tern.Client, error) {
	tx, err := tern.New(
		tern.WithBroker(url), wsTransport,
		tern.WithClientID(demoTxID),
		tern.WithSessionExpiry(time.Hour),
		tern.WithReconnectBackoff(fast),
		tern.WithConnectTimeout(5*time.Second),
		tern.WithOnConnectionUp(func(info *tern.ConnackInfo) {
			if ups.tx.Add(1) > 1 && !info.SessionPresent {
				ups.txLost.Add(1)
			}
		}),
	)
	if err != nil {
		return nil, err
	}
	if err := tx.Connect(ctx); err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	return tx, nil
}

// publishers is how many goroutines publish at once. A durable Publish returns after its
// fsync; with many callers the queue shares one fsync among them (group commit), so one
// caller would measure the disk's latency, not the queue's throughput.
const publishers = 32

// publishAll publishes the messages 1..N, taking sequence numbers in order and making the
// planned faults on the way; it returns how many were stored and, if it had to stop, why.
func publishAll(ctx context.Context, qp queuePublisher, cfg demoConfig, tl *tally, faults *faultPlan) (int, string) {
	received := func() int64 { return int64(tl.uniqueCount()) }
	var (
		mu        sync.Mutex // sequence numbers and faults, in order
		next      int
		why       string
		published atomic.Int64
		wg        sync.WaitGroup
	)
	// take returns the next sequence number, after the faults due before it, or 0 to stop.
	take := func() int {
		mu.Lock()
		defer mu.Unlock()
		if why != "" || next >= cfg.Messages {
			return 0
		}
		if w := faults.due(ctx, int64(next+1), received, cfg.Wait); w != "" {
			why = w
			return 0
		}
		next++
		return next
	}
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, cfg.PayloadSize)
			for seq := take(); seq != 0; seq = take() {
				qos := byte(cfg.QoS)
				if cfg.QoS == 12 {
					qos = byte(2 - seq%2)
				}
				binary.BigEndian.PutUint64(payload[0:], uint64(seq))
				binary.BigEndian.PutUint64(payload[8:], tl.run)
				m := tern.PublishOptions{Topic: fmt.Sprintf("%sq%d", demoTopicPrefix, qos), Payload: payload, QoS: qos}
				if err := qp.Publish(ctx, m); err != nil {
					mu.Lock()
					if why == "" {
						why = fmt.Sprintf("publish %d: %v", seq, err)
					}
					mu.Unlock()
					return
				}
				tl.accept(seq)
				published.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(published.Load()), why
}

// waitAcked waits until the publisher has every message acknowledged, giving up after
// limit without progress.
func waitAcked(ctx context.Context, qp queuePublisher, limit time.Duration) string {
	return waitProgress(ctx, limit, func() (int64, bool) {
		st := qp.Stats()
		return st.Delivered, st.Depth == 0 && st.InFlight == 0
	}, "publisher acknowledgements")
}

// waitReceived waits until the receiver has every accepted sequence number, giving up
// after limit without progress.
func waitReceived(ctx context.Context, tl *tally, limit time.Duration) string {
	return waitProgress(ctx, limit, func() (int64, bool) {
		accepted, got := tl.progress()
		return int64(got), got >= accepted
	}, "receiver")
}

// waitProgress polls probe until it reports done; it gives up when ctx ends or the counter
// has not moved for limit, and says why.
func waitProgress(ctx context.Context, limit time.Duration, probe func() (int64, bool), what string) string {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	last, since := int64(-1), time.Now()
	for {
		n, done := probe()
		if done {
			return ""
		}
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > limit {
			return fmt.Sprintf("%s made no progress for %v (at %d)", what, limit, n)
		}
		select {
		case <-ctx.Done():
			return "interrupted: " + context.Cause(ctx).Error()
		case <-t.C:
		}
	}
}

// endSession disconnects c and ends its session at the broker, so a demo leaves nothing
// queued behind on an external broker.
func endSession(c *tern.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	zero := time.Duration(0)
	c.DisconnectWith(ctx, tern.DisconnectOptions{SessionExpiry: &zero})
}

// hostPort returns the TCP address of an mqtt:// or tcp:// broker URL, for the proxy.
func hostPort(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	port := u.Port()
	switch u.Scheme {
	case "mqtt", "tcp":
		if port == "" {
			port = "1883"
		}
	case "ws":
		if port == "" {
			port = "80"
		}
	default:
		return "", fmt.Errorf("broker %q: the demo proxies plain TCP only (mqtt://, tcp:// or ws://)", raw)
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// viaProxy returns the broker URL raw with its host replaced by the proxy's address: same
// scheme and path, so a WebSocket broker is reached through the TCP proxy as WebSocket.
// raw has passed hostPort.
func viaProxy(raw, proxyAddr string) string {
	u, _ := url.Parse(raw)
	u.Host = proxyAddr
	return u.String()
}

// tally counts, by sequence number, what the publisher accepted and what the receiver got.
type tally struct {
	run uint64

	mu       sync.Mutex
	counts   []uint8 // deliveries per sequence number, saturating
	accepted []bool  // Publish returned nil for this sequence number
	nAcc     int     // accepted sequence numbers
	nAccGot  int     // accepted sequence numbers received at least once
	unique   int
	total    int
	foreign  int
	dupQoS   [3]int // deliveries beyond the first, by the QoS they arrived at
	dupDUP   [3]int // of those, the ones with DUP set: the broker's own resend to the receiver
}

func newTally(run uint64, n int) *tally {
	return &tally{run: run, counts: make([]uint8, n+1), accepted: make([]bool, n+1)}
}

// accept records that the publisher accepted (stored) message seq.
func (t *tally) accept(seq int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq <= 0 || seq >= len(t.accepted) || t.accepted[seq] {
		return
	}
	t.accepted[seq] = true
	t.nAcc++
	if t.counts[seq] > 0 {
		t.nAccGot++
	}
}

// add is the receiver's callback: it runs one message at a time and the message is
// acknowledged when it returns.
func (t *tally) add(m *tern.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(m.Payload) < 16 || binary.BigEndian.Uint64(m.Payload[8:]) != t.run {
		t.foreign++
		return
	}
	seq := binary.BigEndian.Uint64(m.Payload)
	if seq == 0 || seq >= uint64(len(t.counts)) {
		t.foreign++
		return
	}
	t.total++
	if t.counts[seq] > 0 && m.QoS <= 2 {
		t.dupQoS[m.QoS]++
		if m.Dup {
			t.dupDUP[m.QoS]++
		}
	}
	if t.counts[seq] == 0 {
		t.unique++
		if t.accepted[seq] {
			t.nAccGot++
		}
	}
	if t.counts[seq] < math.MaxUint8 {
		t.counts[seq]++
	}
}

func (t *tally) uniqueCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.unique
}

// progress returns how many sequence numbers were accepted, and how many of those arrived.
func (t *tally) progress() (accepted, got int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nAcc, t.nAccGot
}

func (t *tally) snapshot() (unique, dups, foreign int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.unique, t.total - t.unique, t.foreign
}

// seqCount compares the accepted sequence numbers with the received ones, as sets.
type seqCount struct {
	Received   int   // distinct sequence numbers the receiver got
	Lost       int   // accepted and never received: |accepted - received|
	LostSeqs   []int // the first few lost sequence numbers, ascending
	Unexpected int   // received but never reported accepted (a Publish that failed late)
	Duplicates int   // deliveries beyond the first of a sequence number
	DupQoS1    int   // of which arrived at QoS 1
	DupQoS2    int   // of which arrived at QoS 2
	DupResent1 int   // of DupQoS1, those with DUP set: the broker resent its own delivery
	DupResent2 int   // of DupQoS2, the same
	Foreign    int   // messages not from this run (an old session on an external broker)
}

// maxLostShown bounds the lost sequence numbers a report lists.
const maxLostShown = 10

// compare returns the set comparison. It scans every sequence number once: call it at
// the end of a run.
func (t *tally) compare() seqCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := seqCount{Received: t.unique, Duplicates: t.total - t.unique, Foreign: t.foreign,
		DupQoS1: t.dupQoS[1], DupQoS2: t.dupQoS[2], DupResent1: t.dupDUP[1], DupResent2: t.dupDUP[2]}
	for seq := 1; seq < len(t.counts); seq++ {
		switch {
		case t.accepted[seq] && t.counts[seq] == 0:
			c.Lost++
			if len(c.LostSeqs) < maxLostShown {
				c.LostSeqs = append(c.LostSeqs, seq)
			}
		case !t.accepted[seq] && t.counts[seq] > 0:
			c.Unexpected++
		}
	}
	return c
}
