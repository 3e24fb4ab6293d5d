package tern

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/internal/trie"
	"github.com/ternmq/tern/packet"
)

// Client is an MQTT 5 client with a built-in supervisor: once Connect succeeds it keeps a
// connection up, reconnecting with backoff, resending what was in flight and subscribing
// again when the broker lost the session, until Disconnect. All methods are safe for
// concurrent use.
type Client struct {
	cfg  *config
	log  *slog.Logger
	st   *stats // nil unless WithStats
	info atomic.Pointer[ConnackInfo]

	// mu is the session lock: everything below it up to subMu.
	mu       sync.Mutex
	started  bool
	closed   bool
	conn     *conn
	connGen  uint64
	up       chan struct{} // closed while a connection is up
	clientID string

	nextID    uint16
	inflight  map[uint16]*outMsg // outbound QoS 1/2 by packet identifier
	head      *outMsg            // oldest outbound in flight, for replay in order
	tail      *outMsg
	sendQuota int // the broker's Receive Maximum
	inUse     int // places of the window taken
	inUseHigh int // the most places ever taken at once (tests check the window)
	quotaQ    []*quotaWaiter
	requests  map[uint16]*request // SUBSCRIBE/UNSUBSCRIBE awaiting acknowledgement

	acks    ackQueue            // received QoS 1/2 in arrival order, until acknowledged
	inQoS2  map[uint16]*inbound // received QoS 2 until PUBCOMP is sent
	inCount int                 // received QoS 1/2 not yet fully acknowledged

	// subMu guards the routing table. Lock order: mu before subMu before a writer's mu.
	subMu      sync.RWMutex
	routes     trie.Trie[*Subscription]
	filterRefs map[string]int
	subs       map[*Subscription]struct{}
	byID       map[uint32][]*Subscription // by subscription identifier
	nextSubID  uint32
	matchBuf   []*Subscription // reader goroutine only

	events  *eventLoop
	cancel  context.CancelFunc // stops the supervisor's current wait or attempt
	supDone chan struct{}      // closed when the supervisor exits
	bg      sync.WaitGroup     // background work owned by the client (resubscribe)
}

// New returns a client configured by opts. It validates every option and connects to
// nothing; call Connect.
func New(opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:        cfg,
		log:        cfg.logger,
		clientID:   cfg.clientID,
		up:         make(chan struct{}),
		inflight:   make(map[uint16]*outMsg),
		requests:   make(map[uint16]*request),
		inQoS2:     make(map[uint16]*inbound),
		filterRefs: make(map[string]int),
		subs:       make(map[*Subscription]struct{}),
		byID:       make(map[uint32][]*Subscription),
	}
	if cfg.stats {
		c.st = new(stats)
	}
	return c, nil
}

// ClientID returns the client identifier in use: the configured one, or the one the broker
// assigned on the last connect.
func (c *Client) ClientID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}

// Connected reports whether a connection is up right now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// Info returns what the broker granted on the last successful connect, or nil before one.
func (c *Client) Info() *ConnackInfo { return c.info.Load() }

// Connect connects to the broker and waits for CONNACK, bounded by ctx and the connect
// timeout. On success the supervisor keeps the client connected until Disconnect. On failure
// nothing keeps running and Connect may be called again.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.started {
		c.mu.Unlock()
		return ErrAlreadyConnected
	}
	c.started = true
	c.mu.Unlock()

	runCtx, cancel := context.WithCancel(context.Background())
	c.events = newEventLoop()
	cn, err := c.dialAny(ctx, 0)
	if err != nil {
		cancel()
		c.events.close()
		<-c.events.done
		c.mu.Lock()
		c.started = false
		c.mu.Unlock()
		return err
	}
	c.cancel = cancel
	c.supDone = make(chan struct{})
	c.install(cn)
	go c.supervise(runCtx, cn)
	return nil
}

// dialAny tries the brokers in order, starting at index start, and returns the first
// connection that completes its handshake.
func (c *Client) dialAny(ctx context.Context, start int) (*conn, error) {
	var errs []error
	n := len(c.cfg.brokers)
	for i := 0; i < n; i++ {
		u := c.cfg.brokers[(start+i)%n]
		c.mu.Lock()
		clean := c.cfg.cleanStart && c.connGen == 0
		c.mu.Unlock()
		cn, err := c.dialConn(ctx, u, clean)
		if err == nil {
			return cn, nil
		}
		if s := c.st; s != nil {
			s.ConnectErrors.Add(1)
		}
		c.log.Warn("tern: connect failed", "broker", redact(u), "err", err)
		if c.cfg.onConnectErr != nil {
			fn := c.cfg.onConnectErr
			c.events.post(func() { fn(err) })
		}
		errs = append(errs, err)
		if ctx.Err() != nil || !retryable(err) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// retryable decides whether another broker or a later attempt may succeed.
func retryable(err error) bool {
	var rc *ReasonCodeError
	if errors.As(err, &rc) {
		switch rc.Code {
		// Refusals about who we are: trying again only repeats them.
		case packet.BadUserNameOrPassword, packet.NotAuthorized, packet.Banned,
			packet.BadAuthenticationMethod, packet.ClientIdentifierNotValid,
			packet.UnsupportedProtocolVersion:
			return false
		}
		return true
	}
	// An invalid option stays invalid.
	return !errors.Is(err, ErrInvalidOption)
}

// install makes cn the live connection: session state is resumed or rebuilt, then the
// connection's goroutines start.
func (c *Client) install(cn *conn) {
	info := cn.info
	c.mu.Lock()
	c.connGen++
	cn.gen = c.connGen
	c.clientID = info.ClientID
	c.info.Store(info)
	c.conn = cn
	c.sendQuota = int(info.ReceiveMaximum)
	c.acks.reset()
	if !info.SessionPresent {
		// The broker has no session: nothing it sent us is pending any more.
		clear(c.inQoS2)
	}
	c.inCount = len(c.inQoS2)
	cn.start()
	c.resendLocked(cn, info.SessionPresent)
	for _, r := range c.requests {
		cn.w.sendUrgent(r.pkt.AppendTo(nil))
	}
	c.grantQuotaLocked()
	close(c.up)
	resubscribe := !info.SessionPresent && c.connGen > 1
	c.mu.Unlock()

	if s := c.st; s != nil {
		s.Connects.Add(1)
	}
	c.log.Info("tern: connected", "broker", info.Broker, "session_present", info.SessionPresent,
		"receive_maximum", info.ReceiveMaximum)
	if resubscribe {
		c.resubscribeAll()
	}
	if fn := c.cfg.onUp; fn != nil {
		c.events.post(func() { fn(info) })
	}
}

// resendLocked writes the outbound session to a new connection in its original order: with
// the session resumed, PUBREL for QoS 2 messages past PUBREC and PUBLISH with DUP for the
// rest (§4.4); with the session lost, QoS 2 messages past PUBREC are complete (the broker
// took them) and the others are published anew.
func (c *Client) resendLocked(cn *conn, resumed bool) {
	for om := c.head; om != nil; {
		next := om.next
		switch {
		case om.released && resumed:
			rel := packet.Ack{Kind: packet.PUBREL, PacketID: om.id}
			cn.w.sendUrgent(rel.AppendTo(nil))
		case om.released:
			c.completeLocked(om, nil)
		default:
			c.writeOutLocked(cn, om, resumed && om.sent)
		}
		om = next
	}
}

// resubscribeAll subscribes every live subscription again after the broker lost the
// session. Refusals are logged; the subscription keeps waiting for messages.
func (c *Client) resubscribeAll() {
	c.subMu.RLock()
	subs := make([]*Subscription, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
	}
	c.subMu.RUnlock()
	for _, s := range subs {
		p := &packet.Subscribe{SubscriptionID: s.id, UserProperties: s.cfg.props}
		if info := c.info.Load(); info != nil && !info.SubscriptionIDs && s.cfg.subID == 0 {
			p.SubscriptionID = 0 // this broker does not take them; routing falls back to filters
		}
		for i, f := range s.filters {
			if s.results != nil && s.results[i].Err != nil {
				continue
			}
			p.Subscriptions = append(p.Subscriptions, packet.Subscription{Filter: f.Topic, QoS: f.QoS,
				NoLocal: f.NoLocal, RetainAsPublished: f.RetainAsPublished, RetainHandling: f.RetainHandling})
		}
		if len(p.Subscriptions) == 0 {
			continue
		}
		c.bg.Add(1)
		go func() {
			defer c.bg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.connectTimeout)
			defer cancel()
			res, err := c.request(ctx, p)
			if err != nil {
				c.log.Warn("tern: resubscribe failed", "err", err)
				return
			}
			for i, code := range res.(*packet.Suback).ReasonCodes {
				if code.IsError() && i < len(p.Subscriptions) {
					c.log.Warn("tern: resubscribe refused", "filter", p.Subscriptions[i].Filter, "reason", code.String())
				}
			}
		}()
	}
}

// supervise watches the live connection and replaces it when it dies, until the client is
// disconnected or the connection-down callback says stop.
func (c *Client) supervise(ctx context.Context, cn *conn) {
	defer func() {
		c.bg.Wait()
		c.events.close()
		close(c.supDone)
	}()
	attempt := 0
	broker := 0
	for {
		<-cn.closing
		cn.wait()
		reason := cn.reason()
		c.uninstall(cn)
		if ctx.Err() != nil {
			return
		}
		if s := c.st; s != nil {
			s.ConnectionLost.Add(1)
		}
		c.log.Warn("tern: connection lost", "err", reason)
		if fn := c.cfg.onDown; fn != nil {
			keep := make(chan bool, 1)
			c.events.post(func() { keep <- fn(reason) })
			select {
			case k := <-keep:
				if !k {
					c.shutdown(ErrConnectionLost)
					return
				}
			case <-ctx.Done():
				return
			}
		}
		// A connection that dies soon after it came up counts as a failed attempt, so a
		// broker that accepts and then drops causes no tight loop.
		for {
			attempt++
			if !sleepCtx(ctx, c.cfg.backoff.Delay(attempt)) {
				return
			}
			var err error
			cn, err = c.dialAny(ctx, broker)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			broker++
		}
		c.install(cn)
		// Reset the backoff only once the connection has proved itself.
		select {
		case <-cn.closing:
		case <-time.After(c.cfg.backoff.Delay(1) + time.Second):
			attempt = 0
		}
	}
}

// uninstall detaches a dead connection from the session.
func (c *Client) uninstall(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == cn {
		c.conn = nil
		c.up = make(chan struct{})
		c.acks.reset()
	}
}

// waitConn returns the live connection, waiting for one until ctx ends.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if cn := c.conn; cn != nil {
			c.mu.Unlock()
			return cn, nil
		}
		if !c.started {
			c.mu.Unlock()
			return nil, ErrNotConnected
		}
		up := c.up
		c.mu.Unlock()
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// DisconnectOptions are the fields of the DISCONNECT that DisconnectWith sends.
type DisconnectOptions struct {
	ReasonCode     packet.ReasonCode // default: normal disconnection
	SessionExpiry  *time.Duration    // nil: keep the value from CONNECT
	ReasonString   string
	UserProperties []packet.UserProperty
}

// Disconnect waits for queued packets to be written (bounded by ctx and the disconnect
// flush timeout), sends DISCONNECT with reason 0x00 and stops the client. Publishes still
// awaiting acknowledgement fail with ErrClosed; subscriptions are closed. The client cannot
// be used again. It always returns by the time ctx ends.
func (c *Client) Disconnect(ctx context.Context) error {
	return c.DisconnectWith(ctx, DisconnectOptions{})
}

// DisconnectWith is Disconnect with a chosen reason code, session expiry and properties.
// Reason code 0x04 asks the broker to publish the will message.
func (c *Client) DisconnectWith(ctx context.Context, o DisconnectOptions) error {
	d := &packet.Disconnect{ReasonCode: o.ReasonCode, ReasonString: o.ReasonString, UserProperties: o.UserProperties}
	if o.SessionExpiry != nil {
		if *o.SessionExpiry < 0 {
			return fmt.Errorf("%w: negative session expiry", ErrInvalidOption)
		}
		d.SessionExpiry = packet.Ptr(sessionExpirySeconds(*o.SessionExpiry))
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	started := c.started
	c.closed = true
	cn := c.conn
	c.mu.Unlock()
	if !started {
		return nil
	}
	var err error
	if cn != nil {
		fctx, cancel := context.WithTimeout(ctx, c.cfg.flushTimeout)
		cn.w.flush(fctx)
		cancel()
		cn.sendDisconnect(d, ErrClosed)
	}
	c.shutdown(ErrClosed)
	select {
	case <-c.supDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-c.events.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	return err
}

// shutdown stops the supervisor and fails everything waiting on the session with reason.
func (c *Client) shutdown(reason error) {
	c.cancel()
	c.mu.Lock()
	c.closed = true
	if cn := c.conn; cn != nil {
		cn.close(reason)
	}
	for om := c.head; om != nil; {
		next := om.next
		c.completeLocked(om, reason)
		om = next
	}
	for _, w := range c.quotaQ {
		w.err = reason
		close(w.ch)
	}
	c.quotaQ = nil
	for id, r := range c.requests {
		r.err = reason
		close(r.done)
		delete(c.requests, id)
	}
	select {
	case <-c.up:
	default:
		close(c.up) // wake waitConn, which then sees closed
	}
	c.mu.Unlock()

	c.subMu.Lock()
	subs := make([]*Subscription, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
	}
	clear(c.subs)
	c.subMu.Unlock()
	for _, s := range subs {
		s.close()
	}
}
