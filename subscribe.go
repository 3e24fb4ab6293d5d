package tern

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/ternmq/tern/packet"
)

// TopicFilter is one filter of a subscription with its MQTT 5 options.
type TopicFilter struct {
	Topic             string // a filter, wildcards and $share/{name}/{filter} allowed
	QoS               byte   // the maximum QoS to receive at
	NoLocal           bool   // skip messages this client published itself
	RetainAsPublished bool   // keep the RETAIN flag as the publisher set it
	RetainHandling    byte   // packet.RetainSendOnSubscribe (default), ...IfNewSubscription, ...DoNotSend
}

// SubOption configures one subscription.
type SubOption func(*subConfig) error

type subConfig struct {
	buffer    int
	policy    DropPolicy
	onDrop    func(*Message)
	autoAck   bool
	manualAck bool
	zeroCopy  bool
	subID     uint32
	props     []packet.UserProperty
}

// SubBuffer sets how many messages the subscription buffers. Default: the client's
// WithMaxSubscribeQueueSize (1024).
func SubBuffer(n int) SubOption {
	return func(s *subConfig) error {
		if n < 1 {
			return fmt.Errorf("%w: subscription buffer must be at least 1", ErrInvalidOption)
		}
		s.buffer = n
		return nil
	}
}

// SubDropPolicy sets what happens to a message that finds the buffer full. Default: the
// client's WithDropPolicy (Block).
func SubDropPolicy(p DropPolicy) SubOption {
	return func(s *subConfig) error {
		if p > DropOldest {
			return fmt.Errorf("%w: unknown drop policy %d", ErrInvalidOption, p)
		}
		s.policy = p
		return nil
	}
}

// SubOnDrop sets a function called with each message the drop policy discards (it has
// already been acknowledged). It runs on the read loop and must not block.
func SubOnDrop(fn func(*Message)) SubOption {
	return func(s *subConfig) error { s.onDrop = fn; return nil }
}

// SubAutoAck acknowledges each message as soon as it enters the subscription's buffer, so the
// application need not call Ack. Without it, channel and queue subscriptions must Ack every
// message; callback subscriptions acknowledge when the callback returns.
func SubAutoAck() SubOption {
	return func(s *subConfig) error { s.autoAck = true; return nil }
}

// SubManualAck makes a callback subscription leave acknowledgement to the callback's code.
func SubManualAck() SubOption {
	return func(s *subConfig) error { s.manualAck = true; return nil }
}

// SubZeroCopy delivers messages that point into the read buffer instead of copies: no
// allocation per message, but nothing of a Message may be used after its Ack, and every
// message, QoS 0 included, must be acknowledged or its buffer is never reused.
func SubZeroCopy() SubOption {
	return func(s *subConfig) error { s.zeroCopy = true; return nil }
}

// SubIdentifier sets the Subscription Identifier sent with the SUBSCRIBE; the broker returns
// it in the messages this subscription matches (Message.SubscriptionIDs). Without it, Tern
// picks an identifier of its own whenever the broker supports them, and uses the identifiers
// to hand each copy of a message to exactly the subscription it is for.
func SubIdentifier(id uint32) SubOption {
	return func(s *subConfig) error {
		if id == 0 || id > packet.MaxVBI {
			return fmt.Errorf("%w: subscription identifier must be in [1, 268435455]", ErrInvalidOption)
		}
		s.subID = id
		return nil
	}
}

// SubUserProperty adds a user property to the SUBSCRIBE packet.
func SubUserProperty(key, value string) SubOption {
	return func(s *subConfig) error {
		s.props = append(s.props, packet.UserProperty{Key: key, Value: value})
		return nil
	}
}

// FilterResult is the broker's answer for one filter of a SUBSCRIBE.
type FilterResult struct {
	Filter     string
	GrantedQoS byte  // valid when Err is nil
	Err        error // a *ReasonCodeError when the broker refused the filter
}

// Subscription is a live subscription: a set of filters and the place their messages go.
type Subscription struct {
	c        *Client
	id       uint32 // subscription identifier sent with SUBSCRIBE; 0: none
	filters  []TopicFilter
	cfg      subConfig
	zeroCopy bool
	results  []FilterResult

	mu       sync.Mutex // held while delivering, so close never races a send
	closed   bool
	quit     chan struct{} // closed first on close, to wake a blocked delivery
	quitOnce sync.Once
	ch       chan *Message // channel form
	q        *Queue[*Message]
	cbDone   chan struct{} // callback form: closed when the callback goroutine ends
}

type subscription = Subscription

// Filters returns the subscription's filters.
func (s *Subscription) Filters() []TopicFilter { return append([]TopicFilter(nil), s.filters...) }

// Results returns the broker's answer for each filter, in order.
func (s *Subscription) Results() []FilterResult { return append([]FilterResult(nil), s.results...) }

// Unsubscribe ends the subscription; see Client.Unsubscribe.
func (s *Subscription) Unsubscribe(ctx context.Context) error { return s.c.Unsubscribe(ctx, s) }

// deliver hands m to the subscription under its policy. It runs on the read loop.
func (s *Subscription) deliver(m *Message, cn *conn) {
	if st := s.c.st; st != nil {
		st.Delivered.Add(1)
	}
	if s.cfg.autoAck {
		defer m.Ack() // after the hand-over, so acknowledgement follows arrival
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		m.Ack()
		return
	}
	if s.q != nil {
		// After a successful push the consumer may already have acknowledged (and, with
		// zero-copy, recycled) m: it must not be touched again.
		if s.q.push(m, s.quit, cn.closing) == pushStopped {
			s.notDelivered(m, cn)
		}
		return
	}
	select {
	case s.ch <- m:
		return
	default:
	}
	switch s.cfg.policy {
	case DropNewest:
		s.dropped(m)
	case DropOldest:
		for {
			select {
			case old := <-s.ch:
				s.dropped(old)
			default:
			}
			select {
			case s.ch <- m:
				return
			default:
			}
		}
	default:
		select {
		case s.ch <- m:
		case <-s.quit:
			m.Ack()
		case <-cn.closing:
			s.notDelivered(m, cn)
		}
	}
}

// notDelivered gives up a message that could not be handed over before its connection
// closed. Nothing is acknowledged, and a QoS 2 message is forgotten unless some other
// subscription got it, so the broker's resend is delivered instead of being taken for a
// duplicate.
func (s *Subscription) notDelivered(m *Message, cn *conn) {
	select {
	case <-cn.closing:
		m.abandon()
	default:
		m.Ack() // the subscription ended: discarded on purpose
	}
}

// dropped acknowledges a message the policy discarded, after the on-drop hook has seen it.
func (s *Subscription) dropped(m *Message) {
	if st := s.c.st; st != nil {
		st.Dropped.Add(1)
	}
	if s.cfg.onDrop != nil {
		s.cfg.onDrop(m)
	}
	m.Ack()
}

// droppedByQueue is the queue form's drop hook.
func (s *Subscription) droppedByQueue(m *Message) { s.dropped(m) }

// close ends delivery: the channel is closed, the queue drains then ends.
func (s *Subscription) close() {
	// quit first and without the lock: a delivery blocked on a full buffer holds s.mu.
	s.quitOnce.Do(func() { close(s.quit) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.ch != nil {
		close(s.ch)
	}
	if s.q != nil {
		s.q.close()
	}
}

// Subscribe subscribes to filters and returns a channel of their messages. The channel is
// closed when the subscription ends (Unsubscribe or Disconnect). Unless SubAutoAck is given,
// every message must be acknowledged with Message.Ack. Messages can arrive as soon as the
// SUBSCRIBE is sent, before Subscribe returns.
//
// If the broker refuses some filters, Subscribe returns the subscription (live for the
// granted ones) and a *SubscribeError; if it refuses all, the subscription is nil.
func (c *Client) Subscribe(ctx context.Context, filters []TopicFilter, opts ...SubOption) (<-chan *Message, *Subscription, error) {
	s, err := c.newSubscription(filters, opts)
	if err != nil {
		return nil, nil, err
	}
	s.ch = make(chan *Message, s.cfg.buffer)
	s, err = c.subscribe(ctx, s)
	if s == nil {
		return nil, nil, err
	}
	return s.ch, s, err
}

// SubscribeQueue is Subscribe with a Queue instead of a channel: Pop with a ctx, TryPop, Len.
func (c *Client) SubscribeQueue(ctx context.Context, filters []TopicFilter, opts ...SubOption) (*Queue[*Message], *Subscription, error) {
	s, err := c.newSubscription(filters, opts)
	if err != nil {
		return nil, nil, err
	}
	s.q = newQueue(s.cfg.buffer, s.cfg.policy, s.droppedByQueue)
	s, err = c.subscribe(ctx, s)
	if s == nil {
		return nil, nil, err
	}
	return s.q, s, err
}

// SubscribeCallback subscribes and calls fn for each message, one at a time and in arrival
// order, on a goroutine of the subscription's own (never on the read loop). The message is
// acknowledged when fn returns unless SubManualAck is given.
func (c *Client) SubscribeCallback(ctx context.Context, filters []TopicFilter, fn func(*Message), opts ...SubOption) (*Subscription, error) {
	if fn == nil {
		return nil, fmt.Errorf("%w: nil callback", ErrInvalidOption)
	}
	s, err := c.newSubscription(filters, opts)
	if err != nil {
		return nil, err
	}
	s.q = newQueue(s.cfg.buffer, s.cfg.policy, s.droppedByQueue)
	s.cbDone = make(chan struct{})
	manual := s.cfg.manualAck || s.cfg.autoAck
	q, done := s.q, s.cbDone
	go func() {
		defer close(done)
		for {
			m, ok := q.Pop(context.Background())
			if !ok {
				return
			}
			fn(m)
			if !manual {
				m.Ack()
			}
		}
	}()
	live, err := c.subscribe(ctx, s)
	if live == nil {
		return nil, err
	}
	return live, err
}

func (c *Client) newSubscription(filters []TopicFilter, opts []SubOption) (*Subscription, error) {
	if len(filters) == 0 {
		return nil, fmt.Errorf("%w: no topic filter", ErrInvalidTopic)
	}
	cfg := subConfig{buffer: c.cfg.subBuffer, policy: c.cfg.dropPolicy}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.zeroCopy && cfg.autoAck {
		return nil, fmt.Errorf("%w: SubZeroCopy messages die at Ack, so they cannot be auto-acknowledged", ErrInvalidOption)
	}
	for _, f := range filters {
		sub := packet.Subscription{Filter: f.Topic, QoS: f.QoS, NoLocal: f.NoLocal,
			RetainAsPublished: f.RetainAsPublished, RetainHandling: f.RetainHandling}
		if err := sub.Validate(); err != nil {
			if errors.Is(err, packet.ErrInvalidQoS) || errors.Is(err, packet.ErrInvalidProperty) {
				return nil, fmt.Errorf("%w: filter %q: %w", ErrInvalidOption, f.Topic, err)
			}
			return nil, invalidTopic(f.Topic, err)
		}
	}
	return &Subscription{
		c:        c,
		filters:  append([]TopicFilter(nil), filters...),
		cfg:      cfg,
		zeroCopy: cfg.zeroCopy,
		quit:     make(chan struct{}),
	}, nil
}

// checkFilters validates a subscription against what the broker granted in CONNACK.
func (c *Client) checkFilters(s *Subscription) error {
	info := c.info.Load()
	if info == nil {
		return nil
	}
	for _, f := range s.filters {
		_, _, shared := packet.SplitShared(f.Topic)
		if shared && !info.SharedSubs {
			return fmt.Errorf("%w: %q", ErrSharedNotSupported, f.Topic)
		}
		if !info.WildcardSubs && packet.HasWildcard(f.Topic) {
			return fmt.Errorf("%w: %q", ErrWildcardsNotSupported, f.Topic)
		}
	}
	if s.cfg.subID != 0 && !info.SubscriptionIDs {
		return ErrSubIDNotSupported
	}
	return nil
}

// SubscribeError reports the filters a broker refused.
type SubscribeError struct {
	Results []FilterResult
}

func (e *SubscribeError) Error() string {
	var b strings.Builder
	b.WriteString("tern: subscribe refused for")
	for _, r := range e.Results {
		if r.Err != nil {
			fmt.Fprintf(&b, " %q (%v)", r.Filter, r.Err)
		}
	}
	return b.String()
}

// subscribe registers the routes, sends SUBSCRIBE and waits for SUBACK.
func (c *Client) subscribe(ctx context.Context, s *Subscription) (*Subscription, error) {
	if err := c.checkFilters(s); err != nil {
		s.close()
		return nil, err
	}
	// Route first: retained messages may arrive before SUBACK. This also picks the
	// subscription identifier.
	c.addRoutes(s)
	p := &packet.Subscribe{SubscriptionID: s.id, UserProperties: s.cfg.props}
	for _, f := range s.filters {
		p.Subscriptions = append(p.Subscriptions, packet.Subscription{Filter: f.Topic, QoS: f.QoS,
			NoLocal: f.NoLocal, RetainAsPublished: f.RetainAsPublished, RetainHandling: f.RetainHandling})
	}
	res, err := c.request(ctx, p)
	if err != nil {
		c.removeRoutes(s)
		s.close()
		return nil, err
	}
	suback := res.(*packet.Suback)
	if len(suback.ReasonCodes) != len(s.filters) {
		c.removeRoutes(s)
		s.close()
		return nil, fmt.Errorf("%w: SUBACK has %d reason codes for %d filters", ErrConnectionLost, len(suback.ReasonCodes), len(s.filters))
	}
	s.results = make([]FilterResult, len(s.filters))
	refused := 0
	for i, code := range suback.ReasonCodes {
		s.results[i].Filter = s.filters[i].Topic
		if code.IsError() {
			refused++
			s.results[i].Err = &ReasonCodeError{Op: "subscribe", Code: code, Reason: suback.ReasonString, UserProperties: suback.UserProperties}
		} else {
			s.results[i].GrantedQoS = byte(code)
		}
	}
	if refused == 0 {
		return s, nil
	}
	serr := &SubscribeError{Results: s.Results()}
	if refused == len(s.filters) {
		c.removeRoutes(s)
		s.close()
		return nil, serr
	}
	// Keep routing only the granted filters.
	c.subMu.Lock()
	for i, r := range s.results {
		if r.Err != nil {
			c.routes.Remove(s.filters[i].Topic, s)
			c.filterRefs[s.filters[i].Topic]--
		}
	}
	c.subMu.Unlock()
	return s, serr
}

func (c *Client) addRoutes(s *Subscription) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	s.id = s.cfg.subID
	if info := c.info.Load(); s.id == 0 && (info == nil || info.SubscriptionIDs) {
		// An identifier of our own lets the broker tell us which subscription each copy
		// of a message is for, so overlapping subscriptions get exactly their copies.
		for {
			c.nextSubID = c.nextSubID%autoSubIDMax + 1
			if len(c.byID[c.nextSubID]) == 0 {
				break
			}
		}
		s.id = c.nextSubID
	}
	if s.id != 0 {
		c.byID[s.id] = append(c.byID[s.id], s)
	}
	for _, f := range s.filters {
		c.routes.Add(f.Topic, s)
		c.filterRefs[f.Topic]++
	}
	c.subs[s] = struct{}{}
}

// removeRoutes stops routing to s and returns the filters no other subscription uses.
func (c *Client) removeRoutes(s *Subscription) []string {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if _, ok := c.subs[s]; !ok {
		return nil
	}
	delete(c.subs, s)
	if list := c.byID[s.id]; len(list) > 0 {
		list = slices.DeleteFunc(list, func(x *Subscription) bool { return x == s })
		if len(list) == 0 {
			delete(c.byID, s.id)
		} else {
			c.byID[s.id] = list
		}
	}
	var unused []string
	for i, f := range s.filters {
		if s.results != nil && s.results[i].Err != nil {
			continue // never routed
		}
		if c.routes.Remove(f.Topic, s) {
			c.filterRefs[f.Topic]--
			if c.filterRefs[f.Topic] <= 0 {
				delete(c.filterRefs, f.Topic)
				unused = append(unused, f.Topic)
			}
		}
	}
	return unused
}

// Unsubscribe ends a subscription: its channel or queue is closed and, for each filter no
// other subscription of this client still uses, UNSUBSCRIBE is sent and its UNSUBACK
// awaited. Messages still buffered in a queue can be popped; unacknowledged messages are
// acknowledged. Safe to call more than once.
func (c *Client) Unsubscribe(ctx context.Context, s *Subscription) error {
	if s == nil || s.c != c {
		return fmt.Errorf("%w: subscription of another client", ErrInvalidOption)
	}
	unused := c.removeRoutes(s)
	s.close()
	if len(unused) == 0 {
		return nil
	}
	res, err := c.request(ctx, &packet.Unsubscribe{Filters: unused})
	if err != nil {
		return err
	}
	ua := res.(*packet.Unsuback)
	for i, code := range ua.ReasonCodes {
		// 0x11 (no subscription existed) is a success for our purpose: it is gone.
		if code.IsError() && i < len(unused) {
			return &ReasonCodeError{Op: "unsubscribe", Code: code, Reason: ua.ReasonString, UserProperties: ua.UserProperties}
		}
	}
	return nil
}

// request is a SUBSCRIBE or UNSUBSCRIBE waiting for its acknowledgement.
type request struct {
	pkt       packet.Packet // *packet.Subscribe or *packet.Unsubscribe
	done      chan struct{}
	res       packet.Packet
	err       error
	cancelled bool // guarded by c.mu: its caller gave up; it holds its id until answered
}

// request sends a SUBSCRIBE or UNSUBSCRIBE and waits for its acknowledgement. It waits for a
// connection first; if the connection drops meanwhile, the request is sent again on the next.
func (c *Client) request(ctx context.Context, p packet.Packet) (packet.Packet, error) {
	if _, err := c.waitConn(ctx); err != nil {
		return nil, err
	}
	r := &request{pkt: p, done: make(chan struct{})}
	c.mu.Lock()
	var id uint16
	for {
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		var ok bool
		if id, ok = c.allocIDLocked(); ok {
			break
		}
		if err := c.waitIDLocked(ctx); err != nil {
			c.mu.Unlock()
			return nil, err
		}
	}
	switch p := p.(type) {
	case *packet.Subscribe:
		p.PacketID = id
	case *packet.Unsubscribe:
		p.PacketID = id
	}
	if cn := c.conn; cn != nil {
		if err := requestFits(cn.info, p); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		c.requests[id] = r
		cn.w.sendRequest(p.AppendTo(nil))
	} else {
		c.requests[id] = r // sent, and checked, when a connection is installed
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		c.mu.Lock()
		if c.requests[id] == r {
			if c.conn == nil {
				// Not outstanding on any connection: no answer can come for it.
				delete(c.requests, id)
				c.idFreedLocked()
			} else {
				// Its answer may still come on this connection: the identifier stays
				// taken until then or until the connection ends (uninstall), so a
				// late answer cannot be taken for a newer request's.
				r.cancelled = true
			}
		}
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (c *Client) finishRequest(id uint16, want packet.Type, res packet.Packet) error {
	c.mu.Lock()
	r := c.requests[id]
	if r == nil || r.pkt.Type()+1 != want {
		c.mu.Unlock()
		return nil // unknown: nothing waits for it
	}
	delete(c.requests, id)
	c.idFreedLocked()
	if r.cancelled {
		c.mu.Unlock()
		return nil // the late answer to a request its caller gave up
	}
	c.mu.Unlock()
	r.res = res
	close(r.done)
	return nil
}

func (c *Client) handleSuback(s *packet.Suback) error {
	return c.finishRequest(s.PacketID, packet.SUBACK, s)
}

func (c *Client) handleUnsuback(u *packet.Unsuback) error {
	return c.finishRequest(u.PacketID, packet.UNSUBACK, u)
}
