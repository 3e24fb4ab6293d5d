package tern

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packet"
)

// QueuePublisher publishes through a durable queue: Publish returns once the message is
// stored, and a background drain sends stored messages in order, keeping the broker's whole
// Receive Maximum window busy, across outages and (with a durable queue) process restarts.
// Delivery is at least once: a message in flight when the process died is sent again.
type QueuePublisher struct {
	c   *Client
	q   PublisherQueue
	cfg queueConfig

	ctx    context.Context // ends when Close starts
	cancel context.CancelFunc
	wg     sync.WaitGroup
	flight chan flightItem // drain → completer, in send order; its capacity bounds the window we keep

	mu       sync.Mutex
	retry    []QueueEntry // refused entries to send again before new ones
	attempts map[uint64]int
	lastErr  error
	closed   bool

	inFlight, sent, delivered, deadLettered atomic.Int64
	stopSend                                atomic.Bool   // Close: hand nothing new to the client
	settled                                 chan struct{} // cap 1: an outcome was recorded
	wake                                    chan struct{} // cap 1: a retry is waiting
}

type flightItem struct {
	e   QueueEntry
	tok *PublishToken
}

// QueueOption configures a QueuePublisher.
type QueueOption func(*queueConfig) error

type queueConfig struct {
	ttl         time.Duration
	deadLetter  func(QueueEntry, error)
	maxSize     int
	drop        DropPolicy
	timeout     time.Duration
	maxAttempts int
	batch       int
}

// Errors of the queue publisher.
var (
	// ErrQueueFull: the queue holds WithQueueMaxSize messages and the policy is DropNewest.
	ErrQueueFull = errors.New("tern: publish queue full")
	// ErrQueueQoS0: a queue is for messages that must arrive; QoS 0 cannot promise that.
	ErrQueueQoS0 = errors.New("tern: queued messages need QoS 1 or 2")
	// ErrDropped: the message was removed to make room (DropOldest).
	ErrDropped = errors.New("tern: message dropped from a full queue")
	// ErrPoison: the broker refused the message too many times; it was set aside.
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
// (expired, dropped, refused for good), with the reason. It runs on the publisher's own
// goroutines and must not block for long. Default: none (the messages are only counted).
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
// (dead-lettered with ErrDropped). Default: DropNewest.
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

// WithQueueMaxAttempts sets how many times a message refused by the broker with a
// transient reason is tried before it is set aside with ErrPoison. Refusals that cannot
// change by retrying (not authorized, topic name invalid, payload format invalid, packet too
// large) set it aside at once. Default: 5.
func WithQueueMaxAttempts(n int) QueueOption {
	return func(c *queueConfig) error {
		if n < 1 {
			return fmt.Errorf("%w: at least one attempt", ErrInvalidOption)
		}
		c.maxAttempts = n
		return nil
	}
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
	cfg := queueConfig{drop: DropNewest, maxAttempts: 5, batch: 256}
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
		flight:   make(chan flightItem, 1024),
		attempts: make(map[uint64]int),
		settled:  make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
	}
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.drain() }()
	go func() { defer p.wg.Done(); p.complete() }()
	return p, nil
}

// Publish stores m and returns once the queue holds it (durably, for a durable queue). The
// drain sends it later. QoS 0 is refused with ErrQueueQoS0; an invalid message is refused
// here, not later.
func (p *QueuePublisher) Publish(ctx context.Context, m PublishOptions) error {
	if m.QoS == 0 {
		return ErrQueueQoS0
	}
	pkt := toPacket(&m)
	if err := p.c.checkPublish(&pkt); err != nil {
		return err
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrQueueClosed
	}
	if p.cfg.maxSize > 0 && p.q.Stats().Depth >= p.cfg.maxSize {
		if p.cfg.drop == DropNewest {
			return ErrQueueFull
		}
		if err := p.dropOldest(); err != nil {
			return err
		}
	}
	return p.q.Enqueue(ctx, &QueueEntry{Message: m})
}

// dropOldest removes the oldest stored message to make room.
func (p *QueuePublisher) dropOldest() error {
	old, err := p.q.Read(0, 1, nil)
	if err != nil || len(old) == 0 {
		return err
	}
	p.giveUp(old[0], ErrDropped)
	return nil
}

// giveUp acknowledges e in the queue and hands it to the dead-letter callback.
func (p *QueuePublisher) giveUp(e QueueEntry, reason error) {
	if err := p.q.Ack(e.Seq); err != nil {
		p.setErr(err)
	}
	p.deadLettered.Add(1)
	if fn := p.cfg.deadLetter; fn != nil {
		fn(e, reason)
	}
}

func (p *QueuePublisher) setErr(err error) {
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
}

// drain reads the queue in order and hands each message to the client. PublishAsync waits
// for room in the window, so the drain keeps exactly the window busy.
func (p *QueuePublisher) drain() {
	defer close(p.flight)
	var after uint64
	var batch []QueueEntry
	for {
		p.mu.Lock()
		retry := p.retry
		p.retry = nil
		p.mu.Unlock()
		for _, e := range retry {
			if !p.send(e) {
				return
			}
		}
		var err error
		batch, err = p.q.Read(after, p.cfg.batch, batch[:0])
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			p.setErr(err)
		}
		if len(batch) == 0 {
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
			if !p.send(e) {
				return
			}
			after = e.Seq
		}
	}
}

// send publishes one entry; false means the publisher is closing.
func (p *QueuePublisher) send(e QueueEntry) bool {
	if p.stopSend.Load() {
		return false
	}
	m := e.Message
	if p.cfg.ttl > 0 {
		left := time.Until(e.Time.Add(p.cfg.ttl))
		if left <= 0 {
			p.giveUp(e, ErrMessageExpired)
			return true
		}
		if secs := (left + time.Second - 1).Truncate(time.Second); m.MessageExpiry == 0 || secs < m.MessageExpiry {
			m.MessageExpiry = secs
		}
	}
	for {
		tok, err := p.c.publishAsync(p.ctx, m)
		switch {
		case err == nil:
			p.inFlight.Add(1)
			p.sent.Add(1)
			p.flight <- flightItem{e: e, tok: tok}
			return true
		case p.ctx.Err() != nil:
			return false
		case errors.Is(err, ErrClosed):
			return false
		case errors.Is(err, ErrInvalidMessage), errors.Is(err, ErrInvalidTopic),
			errors.Is(err, ErrPacketTooLarge), errors.Is(err, ErrQoSNotSupported),
			errors.Is(err, ErrRetainNotSupported):
			// It will never go out as it is.
			p.giveUp(e, err)
			return true
		default:
			p.setErr(err)
			if !sleepCtx(p.ctx, 100*time.Millisecond) {
				return false
			}
		}
	}
}

// complete waits for each message's outcome, in send order, and records it in the queue.
func (p *QueuePublisher) complete() {
	for it := range p.flight {
		err := p.await(it.tok)
		p.inFlight.Add(-1)
		signal(p.settled)
		if err == nil {
			p.delivered.Add(1)
			if aerr := p.q.Ack(it.e.Seq); aerr != nil {
				p.setErr(aerr)
			}
			continue
		}
		if p.ctx.Err() != nil && errors.Is(err, context.Canceled) {
			continue // closing: the entry stays queued for the next run
		}
		p.setErr(err)
		p.refused(it.e, err)
	}
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

// refused decides what to do with a message the broker or the session did not take.
func (p *QueuePublisher) refused(e QueueEntry, err error) {
	var rc *ReasonCodeError
	if errors.Is(err, ErrClosed) {
		return // the client is gone; the entry stays queued
	}
	if errors.Is(err, ErrMessageExpired) || errors.Is(err, ErrInflightTTL) {
		p.giveUp(e, err)
		return
	}
	p.mu.Lock()
	p.attempts[e.Seq]++
	n := p.attempts[e.Seq]
	p.mu.Unlock()
	permanent := false
	if errors.As(err, &rc) {
		switch rc.Code {
		case packet.NotAuthorized, packet.TopicNameInvalid, packet.PayloadFormatInvalid,
			packet.PacketTooLarge, packet.QoSNotSupported, packet.RetainNotSupported:
			permanent = true
		}
	}
	if permanent || n >= p.cfg.maxAttempts {
		p.mu.Lock()
		delete(p.attempts, e.Seq)
		p.mu.Unlock()
		p.giveUp(e, fmt.Errorf("%w: %w", ErrPoison, err))
		return
	}
	p.mu.Lock()
	p.retry = append(p.retry, e)
	p.mu.Unlock()
	signal(p.wake)
}

// QueuePublisherStats describes a QueuePublisher.
type QueuePublisherStats struct {
	Depth        int           // messages stored and not yet acknowledged
	OldestAge    time.Duration // age of the oldest stored message
	InFlight     int64         // handed to the client, outcome pending
	Sent         int64         // handed to the client, retries included
	Delivered    int64         // acknowledged by the broker
	DeadLettered int64         // expired, dropped or set aside
	LastError    error         // the most recent problem, or nil
}

// Stats returns the publisher's metrics.
func (p *QueuePublisher) Stats() QueuePublisherStats {
	qs := p.q.Stats()
	st := QueuePublisherStats{
		Depth: qs.Depth, InFlight: p.inFlight.Load(), Sent: p.sent.Load(),
		Delivered: p.delivered.Load(), DeadLettered: p.deadLettered.Load(),
	}
	if !qs.Oldest.IsZero() {
		st.OldestAge = time.Since(qs.Oldest)
	}
	p.mu.Lock()
	st.LastError = p.lastErr
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
