package tern

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// QueuePublisher publishes through a durable queue: Publish returns once the message is
// stored, and a background drain sends stored messages in order, keeping the broker's whole
// Receive Maximum window busy, across outages and (with a durable queue) process restarts.
// Delivery is at least once: a message in flight when the process died is sent again.
//
// A message leaves the queue only when the broker acknowledges it, when it expires
// (WithQueueTTL, its own Message Expiry), or when a policy the user set gives up on it
// (WithQueueMaxAttempts, DropOldest); a message given up on goes to the WithDeadLetter
// callback or, without one, to the queue's dead-letter store (DeadLetterQueue). Refusals
// hold the drain with a backoff instead of retrying at once: see WithQueueRetryBackoff.
type QueuePublisher struct {
	c   *Client
	q   PublisherQueue
	cfg queueConfig

	ctx    context.Context // ends when Close starts
	cancel context.CancelFunc
	wg     sync.WaitGroup
	flight chan flightItem // drain → completer, in send order; its capacity bounds the window we keep

	// sizeMu makes the WithQueueMaxSize check and the reservation of a place one step;
	// the enqueue itself runs outside it, so concurrent enqueues still share a sync.
	sizeMu   sync.Mutex
	reserved int // places taken by Publish calls whose Enqueue has not returned

	mu    sync.Mutex
	retry []QueueEntry // refused entries to send again before new ones
	// busy holds the entries handed to the client or waiting in retry, with the number of
	// refusals each has had: only those, so it never holds more than the window and the
	// retry list. DropOldest never takes a busy entry.
	busy map[uint64]int
	// dropped marks entries DropOldest gave up on that the drain may have read before the
	// acknowledgement; true once acknowledged (no later Read returns them).
	dropped map[uint64]bool
	hold    holdState
	lastErr error
	closed  bool

	inFlight, sent, delivered, deadLettered atomic.Int64
	retries, pauses                         atomic.Int64
	stopSend                                atomic.Bool   // Close: hand nothing new to the client
	settled                                 chan struct{} // cap 1: an outcome was recorded
	wake                                    chan struct{} // cap 1: a retry is waiting
}

type flightItem struct {
	e     QueueEntry
	tok   *PublishToken
	round uint64 // hold round when it was sent
}

// QueueOption configures a QueuePublisher.
type QueueOption func(*queueConfig) error

type queueConfig struct {
	ttl         time.Duration
	deadLetter  func(QueueEntry, error)
	onPause     func(QueueEntry, error)
	maxSize     int
	drop        DropPolicy
	timeout     time.Duration
	maxAttempts int
	batch       int
	backoff     Backoff
}

// DefaultQueueRetryBackoff is the backoff a QueuePublisher waits after a refusal: 100 ms
// doubling to 30 s, each delay spread by up to 20% either way.
var DefaultQueueRetryBackoff = ExponentialBackoff{Min: 100 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.2}

func defaultQueueConfig() queueConfig {
	return queueConfig{drop: DropNewest, batch: 256, backoff: DefaultQueueRetryBackoff}
}

// Errors of the queue publisher.
var (
	// ErrQueueFull: the queue holds WithQueueMaxSize messages and the policy is DropNewest,
	// or it is DropOldest and no stored message may be dropped (all are in flight, or
	// there is neither a dead-letter callback nor a DeadLetterQueue to take it).
	ErrQueueFull = errors.New("tern: publish queue full")
	// ErrQueueQoS0: a queue is for messages that must arrive; QoS 0 cannot promise that.
	ErrQueueQoS0 = errors.New("tern: queued messages need QoS 1 or 2")
	// ErrDropped: the message was removed to make room (DropOldest).
	ErrDropped = errors.New("tern: message dropped from a full queue")
	// ErrPoison: the message was set aside: refused WithQueueMaxAttempts times, or one no
	// broker can take (an invalid topic or field).
	ErrPoison = errors.New("tern: message refused repeatedly and set aside")
)

// WithQueueTTL gives every queued message a lifetime: a message not delivered within d of
// its enqueueing goes to the dead-letter callback with ErrMessageExpired, and the remaining
// lifetime is sent as its Message Expiry Interval. Default: 0, no limit.
func WithQueueTTL(d time.Duration) QueueOption {
	return func(c *queueConfig) error {
		if d < 0 {
			return fmt.Errorf("%w: negative queue TTL", ErrInvalidOption)
		}
		c.ttl = d
		return nil
	}
}

// WithDeadLetter sets the function that receives each message the queue gives up on
// (expired, dropped, refused WithQueueMaxAttempts times, invalid), with the reason; the
// message is acknowledged in the queue after fn returns. It runs on the publisher's own
// goroutines, one call at a time per goroutine, and must not block for long. Default:
// none: expired messages are only counted, the others go to the queue's dead-letter store
// (DeadLetterQueue) or, if it has none, stay queued.
func WithDeadLetter(fn func(QueueEntry, error)) QueueOption {
	return func(c *queueConfig) error { c.deadLetter = fn; return nil }
}

// WithQueueMaxSize bounds the number of stored messages; see WithQueueDropPolicy.
// Default: 0, no limit.
func WithQueueMaxSize(n int) QueueOption {
	return func(c *queueConfig) error {
		if n < 0 {
			return fmt.Errorf("%w: negative queue size", ErrInvalidOption)
		}
		c.maxSize = n
		return nil
	}
}

// WithQueueDropPolicy decides what a Publish does when the queue is full: DropNewest
// refuses the new message with ErrQueueFull, DropOldest removes the oldest stored message
// not handed to the client (dead-lettered with ErrDropped; ErrQueueFull when every stored
// message is in flight). Default: DropNewest. Publish calls storing at that moment count
// as stored, so near the limit a queue may refuse or drop one message early, never late.
func WithQueueDropPolicy(p DropPolicy) QueueOption {
	return func(c *queueConfig) error {
		if p != DropNewest && p != DropOldest {
			return fmt.Errorf("%w: a queue drops the newest or the oldest", ErrInvalidOption)
		}
		c.drop = p
		return nil
	}
}

// WithQueuePublishTimeout bounds how long the drain waits for one message to be
// acknowledged. A message that takes longer stays in the client's session (it is resent on
// reconnect, never on a timer) and counts as an error in Stats. Default: 0, no limit.
func WithQueuePublishTimeout(d time.Duration) QueueOption {
	return func(c *queueConfig) error {
		if d < 0 {
			return fmt.Errorf("%w: negative publish timeout", ErrInvalidOption)
		}
		c.timeout = d
		return nil
	}
}

// WithQueueMaxAttempts sets how many refusals a message may have before it is given up
// with ErrPoison (to the dead-letter callback, or the queue's dead-letter store). Every
// refusal counts: transient ones (quota exceeded, server busy, unspecified error) and
// those configuration can fix (not authorized, packet too large, QoS or retain not
// supported). Default: 0, no limit: nothing is given up on, refusals only pause the drain.
func WithQueueMaxAttempts(n int) QueueOption {
	return func(c *queueConfig) error {
		if n < 0 {
			return fmt.Errorf("%w: negative attempt limit", ErrInvalidOption)
		}
		c.maxAttempts = n
		return nil
	}
}

// WithQueueRetryBackoff sets how long the drain holds after a refusal before it sends the
// refused messages again: Delay(n) for the n-th hold in a row, reset by a delivery. A new
// connection ends a hold early (its CONNACK may lift the limit). Default:
// DefaultQueueRetryBackoff. Cost: nothing is sent while a hold lasts.
func WithQueueRetryBackoff(b Backoff) QueueOption {
	return func(c *queueConfig) error {
		if b == nil {
			return fmt.Errorf("%w: nil queue backoff", ErrInvalidOption)
		}
		c.backoff = b
		return nil
	}
}

// WithQueueOnPause sets a function told each time a refusal that configuration can fix
// (not authorized, packet too large, QoS or retain not supported, topic name or payload
// format invalid) pauses the drain, with the refused message and the error. The message
// stays queued; the drain tries again after the backoff or on the next connection. It runs
// on the publisher's goroutines and must not block. Default: none (logged and counted in
// Stats().Pauses).
func WithQueueOnPause(fn func(QueueEntry, error)) QueueOption {
	return func(c *queueConfig) error { c.onPause = fn; return nil }
}

// WithQueueBatchSize sets how many messages the drain reads from the queue at once.
// Default: 256.
func WithQueueBatchSize(n int) QueueOption {
	return func(c *queueConfig) error {
		if n < 1 {
			return fmt.Errorf("%w: batch size must be at least 1", ErrInvalidOption)
		}
		c.batch = n
		return nil
	}
}

// NewQueuePublisher starts draining q through c. The client must be connected or connecting
// (Connect called); the drain waits for connections on its own. Entries already in q, from a
// previous run, are sent first. The queue stays owned by the caller: close it after Close.
func NewQueuePublisher(c *Client, q PublisherQueue, opts ...QueueOption) (*QueuePublisher, error) {
	cfg := defaultQueueConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if c == nil || q == nil {
		return nil, fmt.Errorf("%w: NewQueuePublisher needs a client and a queue", ErrInvalidOption)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &QueuePublisher{
		c: c, q: q, cfg: cfg, ctx: ctx, cancel: cancel,
		flight:  make(chan flightItem, 1024),
		busy:    make(map[uint64]int),
		dropped: make(map[uint64]bool),
		settled: make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
	}
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.drain() }()
	go func() { defer p.wg.Done(); p.complete() }()
	return p, nil
}

// Publish stores m and returns once the queue holds it (durably, for a durable queue). The
// drain sends it later. QoS 0 is refused with ErrQueueQoS0; an invalid message is refused
// here, not later. Safe for concurrent use: concurrent calls store concurrently (a file
// queue syncs them together), and WithQueueMaxSize holds however many call at once. With a
// queue that syncs every write, a loop calling Publish one message at a time waits for one
// fsync per message: use PublishAsync, or several goroutines, for throughput.
func (p *QueuePublisher) Publish(ctx context.Context, m PublishOptions) error {
	if err := p.admit(&m); err != nil {
		return err
	}
	defer p.unreserve()
	return p.q.Enqueue(ctx, &QueueEntry{Message: m})
}

// QueueToken reports when a message given to QueuePublisher.PublishAsync is stored.
type QueueToken struct {
	done chan struct{}
	err  error
}

// Done returns a channel closed once the message is stored, or failed to be.
func (t *QueueToken) Done() <-chan struct{} { return t.done }

// Err returns nil once the message is stored (durably, for a durable queue), or the error
// that stopped it; before Done is closed it returns nil. After an error the message may
// still be stored, as after a failed Publish.
func (t *QueueToken) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// Wait blocks until the outcome is known or ctx ends, and returns it. A ctx error says
// nothing about the message.
func (t *QueueToken) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishAsync stores m like Publish but returns as soon as the queue has taken it, with a
// token resolved once m is stored as durably as Publish would have waited for. Messages
// given to it by one goroutine keep their order in the queue and share fsyncs, so a single
// goroutine reaches the throughput of many calling Publish. With a queue that is not an
// AsyncQueue (NewMemoryQueue) it stores m before it returns and the token is resolved.
// It checks m and WithQueueMaxSize as Publish does; it blocks, bounded by ctx, only while
// the queue holds as many messages waiting for their sync as it allows
// (filequeue.WithMaxPending). Cost: one token (a small allocation) per message. Safe for
// concurrent use.
func (p *QueuePublisher) PublishAsync(ctx context.Context, m PublishOptions) (*QueueToken, error) {
	if err := p.admit(&m); err != nil {
		return nil, err
	}
	aq, ok := p.q.(AsyncQueue)
	if !ok {
		defer p.unreserve()
		if err := p.q.Enqueue(ctx, &QueueEntry{Message: m}); err != nil {
			return nil, err
		}
		return &QueueToken{done: closedChan}, nil
	}
	tok := &QueueToken{done: make(chan struct{})}
	err := aq.EnqueueAsync(ctx, &QueueEntry{Message: m}, func(err error) {
		tok.err = err
		close(tok.done)
		p.unreserve()
	})
	if err != nil {
		p.unreserve()
		return nil, err
	}
	return tok, nil
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// admit checks m for the queue and, under WithQueueMaxSize, takes a place that unreserve
// gives back once the queue's Enqueue has returned.
func (p *QueuePublisher) admit(m *PublishOptions) error {
	if m.QoS == 0 {
		return ErrQueueQoS0
	}
	pkt := toPacket(m)
	if err := p.c.checkPublish(&pkt); err != nil {
		return err
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrQueueClosed
	}
	if p.cfg.maxSize > 0 {
		return p.reserve()
	}
	return nil
}

// unreserve gives back the place admit took.
func (p *QueuePublisher) unreserve() {
	if p.cfg.maxSize > 0 {
		p.sizeMu.Lock()
		p.reserved--
		p.sizeMu.Unlock()
	}
}

// reserve takes a place under WithQueueMaxSize, making room first under DropOldest. The
// check and the reservation are one step under sizeMu; places reserved by calls still
// storing count as taken, so the bound holds however many call at once.
func (p *QueuePublisher) reserve() error {
	p.sizeMu.Lock()
	defer p.sizeMu.Unlock()
	if p.q.Stats().Depth+p.reserved >= p.cfg.maxSize {
		if p.cfg.drop == DropNewest {
			return ErrQueueFull
		}
		if err := p.dropOldest(); err != nil {
			return err
		}
	}
	p.reserved++
	return nil
}

func (p *QueuePublisher) setErr(err error) {
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
}

// drain reads the queue in order and hands each message to the client. PublishAsync waits
// for room in the window, so the drain keeps exactly the window busy. After a refusal it
// holds (see hold), then sends the refused entries again before anything newer.
func (p *QueuePublisher) drain() {
	defer close(p.flight)
	var after uint64 // the last entry read from the queue and sent or skipped
	var batch []QueueEntry
	for {
		if !p.waitHold() || !p.sendRetries() {
			return
		}
		if p.holding() {
			continue
		}
		p.forgetDropped()
		var err error
		batch, err = p.q.Read(after, p.cfg.batch, batch[:0])
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			p.setErr(err)
		}
		if len(batch) == 0 {
			if err != nil && !sleepCtx(p.ctx, p.cfg.backoff.Delay(1)) {
				return // a failing queue is read again after a pause, not in a loop
			}
			select {
			case <-p.q.Notify():
			case <-p.wake:
			case <-p.ctx.Done():
				return
			case <-time.After(time.Second):
				// A safety net for a queue whose notification was missed.
			}
			continue
		}
		for _, e := range batch {
			if p.holding() {
				break // a refusal: hold, resend it first, then read on from after
			}
			if p.claim(e.Seq) && !p.send(e) {
				return
			}
			after = e.Seq
		}
	}
}

// claim marks an entry read by the drain as busy, unless DropOldest took it meanwhile.
func (p *QueuePublisher) claim(seq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.dropped[seq]; ok {
		delete(p.dropped, seq)
		return false
	}
	p.busy[seq] = 0
	return true
}

// forgetDropped drops the marks of dropped entries already acknowledged: the Read about
// to start cannot return them.
func (p *QueuePublisher) forgetDropped() {
	p.mu.Lock()
	for seq, acked := range p.dropped {
		if acked {
			delete(p.dropped, seq)
		}
	}
	p.mu.Unlock()
}

// sendRetries sends the refused entries again, oldest first, until a new hold begins.
// False means the publisher is closing.
func (p *QueuePublisher) sendRetries() bool {
	p.mu.Lock()
	retry := p.retry
	p.retry = nil
	p.mu.Unlock()
	slices.SortFunc(retry, func(a, b QueueEntry) int { return cmp.Compare(a.Seq, b.Seq) })
	for i, e := range retry {
		if p.holding() {
			p.mu.Lock()
			p.retry = append(p.retry, retry[i:]...)
			p.mu.Unlock()
			return true
		}
		if !p.send(e) {
			return false
		}
	}
	return true
}

// send publishes one busy entry; false means the publisher is closing.
func (p *QueuePublisher) send(e QueueEntry) bool {
	if p.stopSend.Load() {
		return false
	}
	m := e.Message
	if p.cfg.ttl > 0 {
		left := time.Until(e.Time.Add(p.cfg.ttl))
		if left <= 0 {
			p.expire(e, ErrMessageExpired)
			return true
		}
		if secs := (left + time.Second - 1).Truncate(time.Second); m.MessageExpiry == 0 || secs < m.MessageExpiry {
			m.MessageExpiry = secs
		}
	}
	for wait := 1; ; wait++ {
		round := p.round()
		tok, err := p.c.publishAsync(p.ctx, m) // the main connection, never the pool
		switch {
		case err == nil:
			p.inFlight.Add(1)
			p.sent.Add(1)
			p.flight <- flightItem{e: e, tok: tok, round: round}
			return true
		case p.ctx.Err() != nil, errors.Is(err, ErrClosed):
			return false
		case errors.Is(err, ErrNotConnected):
			// Connect not called yet: not a refusal, wait and ask again.
			p.setErr(err)
			if !sleepCtx(p.ctx, p.cfg.backoff.Delay(wait)) {
				return false
			}
		default:
			// The client's own check against the broker's limits, or a store failure.
			p.refused(e, err, round)
			return true
		}
	}
}

// ackBatchMax bounds how many deliveries the completer records with one AckBatch.
const ackBatchMax = 256

// complete waits for each message's outcome, in send order, and records it in the queue.
// Deliveries are acknowledged in batches: the completer collects those already known and
// records them (one AckBatch, one write for a file queue) before it would wait.
func (p *QueuePublisher) complete() {
	var acks []uint64
	for it := range p.flight {
		if !tokenDone(it.tok) {
			acks = p.ackDelivered(acks) // nothing more is known yet: record what is
		}
		err := p.await(it.tok)
		p.inFlight.Add(-1)
		signal(p.settled)
		if err == nil {
			acks = append(acks, it.e.Seq)
			if len(acks) >= ackBatchMax || len(p.flight) == 0 {
				acks = p.ackDelivered(acks)
			}
			continue
		}
		acks = p.ackDelivered(acks)
		if p.ctx.Err() != nil && errors.Is(err, context.Canceled) {
			continue // closing: the entry stays queued for the next run
		}
		p.refused(it.e, err, it.round)
	}
	p.ackDelivered(acks)
}

func tokenDone(t *PublishToken) bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// ackDelivered acknowledges delivered entries in the queue, then releases them: until then
// they stay busy, so DropOldest never takes a delivered entry. It returns seqs emptied.
func (p *QueuePublisher) ackDelivered(seqs []uint64) []uint64 {
	if len(seqs) == 0 {
		return seqs
	}
	// Counted first: the broker has them, and whoever sees the queue shrink must see them
	// counted as delivered.
	p.delivered.Add(int64(len(seqs)))
	var err error
	if b, ok := p.q.(BatchAcker); ok {
		err = b.AckBatch(seqs)
	} else {
		for _, seq := range seqs {
			if aerr := p.q.Ack(seq); aerr != nil && err == nil {
				err = aerr
			}
		}
	}
	if err != nil {
		p.setErr(err)
	}
	p.mu.Lock()
	for _, seq := range seqs {
		delete(p.busy, seq)
	}
	p.hold.step = 0
	p.mu.Unlock()
	return seqs[:0]
}

// await waits for one outcome, bounded by the publish timeout; on timeout it keeps waiting
// (the message is still in the session) but records the delay.
func (p *QueuePublisher) await(tok *PublishToken) error {
	if p.cfg.timeout > 0 {
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.timeout)
		err := tok.Wait(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		p.setErr(fmt.Errorf("tern: queued message not acknowledged within %v", p.cfg.timeout))
	}
	return tok.Wait(p.ctx)
}

// QueuePublisherStats describes a QueuePublisher.
type QueuePublisherStats struct {
	Depth        int           // messages stored and not yet acknowledged
	OldestAge    time.Duration // age of the oldest stored message
	InFlight     int64         // handed to the client, outcome pending
	Sent         int64         // handed to the client, retries included
	Delivered    int64         // acknowledged by the broker
	DeadLettered int64         // expired, dropped or set aside
	Retries      int64         // refusals kept for another attempt (each message, each time)
	Pauses       int64         // holds begun by a refusal configuration can fix
	Paused       bool          // the drain is held by such a refusal right now
	LastError    error         // the most recent problem, or nil
}

// Stats returns the publisher's metrics.
func (p *QueuePublisher) Stats() QueuePublisherStats {
	qs := p.q.Stats()
	st := QueuePublisherStats{
		Depth: qs.Depth, InFlight: p.inFlight.Load(), Sent: p.sent.Load(),
		Delivered: p.delivered.Load(), DeadLettered: p.deadLettered.Load(),
		Retries: p.retries.Load(),
	}
	if !qs.Oldest.IsZero() {
		st.OldestAge = time.Since(qs.Oldest)
	}
	p.mu.Lock()
	st.Pauses = p.pauses.Load() // counted under p.mu with the hold it begins
	st.LastError = p.lastErr
	st.Paused = p.hold.pause && time.Now().Before(p.hold.until)
	p.mu.Unlock()
	return st
}

// Close stops accepting messages and waits, bounded by ctx, for the messages in flight to be
// acknowledged, then stops the drain. It returns ctx's error if messages were still in
// flight when ctx ended; they stay stored and are sent by the next QueuePublisher on the
// same queue. The queue itself stays open.
func (p *QueuePublisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	// Hand nothing new to the client, let what is in flight finish while ctx allows, then
	// stop everything.
	p.stopSend.Store(true)
	for p.inFlight.Load() > 0 {
		select {
		case <-p.settled:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	// Every wait of the drain and the completer honours p.ctx, so they end promptly.
	p.cancel()
	p.wg.Wait()
	return ctx.Err()
}
