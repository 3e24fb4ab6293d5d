package tern

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
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
	v311 atomic.Bool // speaks MQTT 3.1.1: configured, or fallen back (see WithProtocol)
	v5ok atomic.Bool // a level-5 connection has succeeded: a close is no reason to fall back

	// mu is the session lock: everything below it up to subMu.
	mu       sync.Mutex
	started  bool
	closed   bool
	conn     *conn
	connGen  uint64
	up       chan struct{} // closed while a connection is up
	clientID string
	brokers  []*url.URL // the failover list; SetBrokers replaces it
	brokerAt int        // index of the broker to try first
	// brokersGen counts SetBrokers calls: an attempt started under an older list may not
	// write brokerAt or redirect, which SetBrokers has reset.
	brokersGen uint64
	redirect   *url.URL // a server reference to try next, from 0x9C/0x9D
	store      Store    // nil: the session lives in memory only
	seq        uint64   // send order of outbound publishes
	keep       bool     // set by shutdown: the broker keeps the session, so does the store

	// redirectMoved: redirect came from 0x9D and stays the first choice until it fails.
	redirectMoved bool

	nextID    uint16
	inflight  map[uint16]*outMsg // outbound QoS 1/2 by packet identifier
	head      *outMsg            // oldest outbound in flight, for replay in order
	tail      *outMsg
	sendQuota int // the broker's Receive Maximum
	inUse     int // places of the window taken
	inUseHigh int // the most places ever taken at once (tests check the window)
	quotaQ    []*quotaWaiter
	requests  map[uint16]*request // SUBSCRIBE/UNSUBSCRIBE awaiting acknowledgement
	idFreed   chan struct{}       // closed when a packet identifier is freed; nil: no waiter
	early     []*request          // SUBSCRIBEs made before Connect, sent by the first install

	acks    ackQueue            // received QoS 1/2 in arrival order, until acknowledged
	inQoS2  map[uint16]*inbound // received QoS 2 until PUBCOMP is sent
	inCount int                 // received QoS 1/2 not yet fully acknowledged

	// subMu guards the routing table. Lock order: mu before subMu before a writer's mu.
	subMu    sync.RWMutex
	routes   trie.Trie[*Subscription]
	byFilter map[string][]*Subscription // live subscriptions by exact filter (granted or pending)
	subs     map[*Subscription]struct{}
	byID     map[uint32][]*Subscription // by subscription identifier
	// brokerID is, per filter in use, the identifier of the last SUBSCRIBE written with it:
	// the broker holds one subscription per filter, under that identifier ([MQTT-3.8.4-3]).
	brokerID map[string]uint32
	// orphans are filters the broker holds under the identifier of a subscription that has
	// ended while others still use the filter: messages tagged with it are theirs.
	orphans   map[uint32][]string
	nextSubID uint32
	matchBuf  []*Subscription // reader goroutine only

	catchAll       *Subscription // WithUnroutedHandler's queue, made on first use; subMu
	catchAllClosed bool          // subMu: shutdown has run, make no new one

	// Rate limit of the unrouted-message warning; reader goroutine only.
	unroutedGen    uint64    // connection of the last warning
	unroutedAt     time.Time // time of the last warning
	unroutedMissed int       // unrouted QoS 1/2 messages since the last warning

	reauthMu sync.Mutex // one re-authentication at a time

	events  *eventLoop
	cancel  context.CancelFunc // stops the supervisor's current wait or attempt
	supDone chan struct{}      // closed when the supervisor exits
	bg      sync.WaitGroup     // background work owned by the client (resubscribe)

	pool atomic.Pointer[pool] // WithPublisherPool's members, from Connect on
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
	return newClient(cfg), nil
}

// newClient makes a client of a validated configuration.
func newClient(cfg *config) *Client {
	c := &Client{
		cfg:      cfg,
		log:      cfg.logger,
		clientID: cfg.clientID,
		brokers:  slices.Clone(cfg.brokers),
		brokerAt: rand.IntN(len(cfg.brokers)),
		store:    cfg.store,
		up:       make(chan struct{}),
		inflight: make(map[uint16]*outMsg),
		requests: make(map[uint16]*request),
		inQoS2:   make(map[uint16]*inbound),
		byFilter: make(map[string][]*Subscription),
		subs:     make(map[*Subscription]struct{}),
		byID:     make(map[uint32][]*Subscription),
		brokerID: make(map[string]uint32),
		orphans:  make(map[uint32][]string),
	}
	if cfg.stats {
		c.st = new(stats)
	}
	c.v311.Store(cfg.protocol == MQTT311)
	return c
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
// nothing keeps running and Connect may be called again. With WithBackgroundConnect,
// Connect returns at once and the supervisor makes the first connection too.
//
// With a Store, the session state it holds is loaded first: unfinished publishes are resent
// on the first connection (nobody waits for their outcome).
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
	// Everything Disconnect needs exists before the first dial, so Disconnect can stop a
	// Connect in progress.
	c.started = true
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.supDone = make(chan struct{})
	c.events = newEventLoop()
	c.mu.Unlock()

	fail := func(err error) error {
		aborted := runCtx.Err() != nil // Disconnect stopped this Connect
		cancel()
		c.events.close()
		<-c.events.done
		close(c.supDone)
		c.mu.Lock()
		if !c.closed {
			c.started = false // Connect may be called again
		}
		c.mu.Unlock()
		if aborted && ctx.Err() == nil {
			return fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return err
	}
	if err := c.restore(); err != nil {
		return fail(err)
	}
	var cn *conn
	if !c.cfg.background {
		dialCtx, stop := context.WithCancel(ctx)
		unhook := context.AfterFunc(runCtx, stop) // Disconnect aborts the dial
		var err error
		cn, err = c.dialAny(dialCtx)
		unhook()
		stop()
		if err != nil {
			return fail(err)
		}
		c.install(cn)
	}
	go c.supervise(runCtx, cn)
	c.startPool()
	return nil
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
//
// Over TCP and TLS it then waits, at most a second (or until ctx ends), for the broker to
// close the connection: by then the broker has read every acknowledgement sent before the
// DISCONNECT, so the session's next connection, from this process or another, is not sent
// again what this one acknowledged.
//
// With a Store and a session that outlives the connection (a session expiry above zero in
// force, see WithSessionExpiry and DisconnectOptions.SessionExpiry), the unfinished QoS 1/2
// exchanges stay in the store: a client started later on it resumes them, so they may still
// be delivered, exactly once for QoS 2. With expiry 0 the broker ends the session and the
// records are deleted.
func (c *Client) Disconnect(ctx context.Context) error {
	return c.DisconnectWith(ctx, DisconnectOptions{})
}

// DisconnectWith is Disconnect with a chosen reason code, session expiry and properties.
// Reason code 0x04 asks the broker to publish the will message. A code outside the
// DISCONNECT table (MQTT 5 §3.14.2.1) is refused with ErrInvalidOption. A client that speaks
// MQTT 3.1.1 has only the plain form: any option fails with ErrNotInV311 and the client stays
// connected.
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
	if c.speaks311() {
		// 3.1.1's DISCONNECT has no body: refuse what it would lose, before anything else.
		d.Version = packet.Version311
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrNotInV311, err)
		}
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
		c.closeSubs(ErrClosed) // made before Connect
		return nil
	}
	var err error
	if cn != nil {
		fctx, cancel := context.WithTimeout(ctx, c.cfg.flushTimeout)
		cn.w.flush(fctx)
		cancel()
		c.cancel() // first, so the supervisor does not take the close for a lost connection
		cn.sendDisconnect(ctx, d, ErrClosed, true)
	}
	c.shutdown(ErrClosed, c.sessionOutlives(o.SessionExpiry))
	err = c.stopPool(ctx)
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

// sessionOutlives reports whether the broker keeps the session once this client stops: the
// session expiry in force (the broker's CONNACK value, else ours) is above zero and a
// DISCONNECT override, if any, does not set it to zero. (An override cannot revive a session
// that CONNECT gave expiry 0: [MQTT-3.14.2-2] makes that a protocol error.)
func (c *Client) sessionOutlives(override *time.Duration) bool {
	inForce := c.cfg.sessionExpiry
	if info := c.info.Load(); info != nil {
		inForce = info.SessionExpiry
	}
	if sessionExpirySeconds(inForce) == 0 {
		return false
	}
	return override == nil || sessionExpirySeconds(*override) > 0
}

// shutdown stops the supervisor and fails everything waiting on the session with reason.
// With keep (the broker keeps the session), the store keeps the unfinished outbound
// exchanges for the next process; without, their records are deleted.
func (c *Client) shutdown(reason error, keep bool) {
	c.cancel()
	c.mu.Lock()
	c.closed = true
	c.keep = keep
	if cn := c.conn; cn != nil {
		cn.close(reason)
	}
	kept := reason
	if keep && c.store != nil {
		kept = fmt.Errorf("%w: kept in the store for the next session", reason)
	}
	for om := c.head; om != nil; {
		next := om.next
		if keep && c.store != nil {
			om.stored = false // the record stays: completeLocked must not delete it
			c.completeLocked(om, kept)
		} else {
			c.completeLocked(om, reason)
		}
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
	c.idFreedLocked() // waiters see closed
	select {
	case <-c.up:
	default:
		close(c.up) // wake waitConn, which then sees closed
	}
	c.mu.Unlock()
	c.closeSubs(reason)
}

// closeSubs ends every subscription, the catch-all included, and fails with reason those
// still waiting for their SUBACK. The client is closed already.
func (c *Client) closeSubs(reason error) {
	c.mu.Lock()
	clear(c.early)
	c.early = nil
	c.mu.Unlock()

	c.subMu.Lock()
	subs := make([]*Subscription, 0, len(c.subs)+1)
	for s := range c.subs {
		subs = append(subs, s)
	}
	clear(c.subs)
	if c.catchAll != nil {
		subs = append(subs, c.catchAll)
	}
	c.catchAllClosed = true
	c.subMu.Unlock()
	for _, s := range subs {
		s.close()
		s.settle(nil, reason)
	}
}
