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
	inline    bool
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
// client's WithDropPolicy (Block). With Block, QoS 1/2 messages beyond the buffer wait
// unacknowledged (bounded by the Receive Maximum) without stopping the read loop,
// while a QoS 0 message into a full buffer stops it until the consumer makes room; see
// Block for the trade-off.
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

// SubInline makes a SubscribeCallback subscription call its callback on the connection's
// read loop instead of on a goroutine of its own: no buffer, no hand-off, no wake-up per
// message, which makes it the cheapest way to receive. The price is that the callback
// holds up everything the connection reads while it runs (acknowledgements of the
// client's own publishes, SUBACKs, PINGRESP, every other subscription), so it must not
// block: no I/O that can stall, no waiting on channels, and no client call that waits for
// the broker (Publish at QoS 1/2, Subscribe, Unsubscribe, Disconnect, Flush) — those
// deadlock, since the answer they wait for is read by the loop the callback is holding.
// PublishAsync at QoS 0 and Message.Ack are fine. Buffer size and drop policy do not
// apply: nothing is buffered. Callbacks still run one at a time, in arrival order.
// Default: off. Only SubscribeCallback accepts it.
func SubInline() SubOption {
	return func(s *subConfig) error { s.inline = true; return nil }
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

	// ready is closed once the broker has answered the SUBSCRIBE, or the subscription
	// failed; results, readyErr and dead are written before and read after.
	ready      chan struct{}
	readyErr   error
	dead       bool // ended by the answer: every filter refused, or no answer
	settleOnce sync.Once

	mu       sync.Mutex // held while delivering (and by the pump), so close never races a send
	closed   bool
	quit     chan struct{} // closed first on close, to wake a blocked delivery
	quitOnce sync.Once
	ch       chan *Message // channel form
	q        *Queue[*Message]
	cbDone   chan struct{}  // callback form: closed when the callback goroutine ends
	inline   func(*Message) // SubInline callback form: called on the read loop under mu

	heldMu  sync.Mutex // leaf: guards held and pumping
	held    []heldMsg  // QoS 1/2 messages waiting for room in a full Block buffer
	pumping bool       // a pump goroutine runs (and holds mu)
}

type subscription = Subscription

// Identifier returns the subscription identifier sent with the subscription's SUBSCRIBE:
// the one given with SubIdentifier, or one the client chose itself so that it can tell which
// subscription each copy of a message is for; 0 when there is none (the broker does not
// support them) or the subscription has not been made yet. A message delivered for this
// subscription carries it in SubscriptionIDs.
func (s *Subscription) Identifier() uint32 {
	s.c.subMu.RLock()
	defer s.c.subMu.RUnlock()
	return s.id
}

// Filters returns the subscription's filters.
func (s *Subscription) Filters() []TopicFilter { return append([]TopicFilter(nil), s.filters...) }

// Results returns the broker's answer for each filter, in order, or nil while the answer has
// not arrived (a subscription made before Connect; see Wait).
func (s *Subscription) Results() []FilterResult {
	select {
	case <-s.ready:
		return append([]FilterResult(nil), s.results...)
	default:
		return nil
	}
}

// Wait waits, bounded by ctx, until the broker has answered the SUBSCRIBE, and returns what
// Subscribe would have returned had it waited: nil when every filter was granted, a
// *SubscribeError when some were refused (Results tells which; the subscription lives on
// for the others, or is closed if none was granted), or the reason the subscription failed
// (ErrClosed, ErrUnsubscribed, a refusal found in CONNACK such as ErrSubIDNotSupported).
// For a subscription made while connected, Subscribe has already waited and Wait returns at
// once. Safe for concurrent use.
func (s *Subscription) Wait(ctx context.Context) error {
	select {
	case <-s.ready:
		return s.readyErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unsubscribe ends the subscription; see Client.Unsubscribe.
func (s *Subscription) Unsubscribe(ctx context.Context) error { return s.c.Unsubscribe(ctx, s) }

// close ends delivery: the channel is closed, the queue drains then ends.
func (s *Subscription) close() {
	// quit first and without the lock: a delivery blocked on a full buffer, or a pump,
	// holds s.mu; quit makes it give up, and taking s.mu then waits for it to finish.
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
// While connected (or once Connect has been called), Subscribe waits for the SUBACK, bounded
// by ctx. If the broker refuses some filters, it returns the subscription (live for the
// granted ones) and a *SubscribeError; if it refuses all, the subscription is nil.
//
// Before Connect, Subscribe does not wait: the subscription is routed at once, so that the
// messages a resumed session delivers right after CONNACK reach it, and its SUBSCRIBE goes
// out with the first connection. The broker's answer comes later: Subscription.Wait waits
// for it and returns the error Subscribe would have returned; Results is nil until then.
//
// Several subscriptions of one client may use the same filter: each receives its own copy
// of every message. The broker holds one subscription per filter, so the options of the
// newest SUBSCRIBE (QoS, No Local, Retain As Published) apply to all of them, and stay in
// force when the newest ends while an older one still uses the filter; its Retain Handling
// decides whether the broker sends its retained messages again, to all of them
// (packet.RetainSendIfNewSubscription avoids that). The filter is unsubscribed at the
// broker when the last subscription using it ends. The same holds for every form.
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
// Like Subscribe, it may be called before Connect.
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
// order, on a goroutine of the subscription's own (on the read loop only with SubInline, for
// callbacks that never block). The message is acknowledged when fn returns unless
// SubManualAck is given. Like Subscribe, it may be called before Connect; the goroutine ends
// with the subscription (Unsubscribe or Disconnect).
func (c *Client) SubscribeCallback(ctx context.Context, filters []TopicFilter, fn func(*Message), opts ...SubOption) (*Subscription, error) {
	if fn == nil {
		return nil, fmt.Errorf("%w: nil callback", ErrInvalidOption)
	}
	s, err := c.newSub(filters, opts, true)
	if err != nil {
		return nil, err
	}
	if s.cfg.inline {
		s.inline = fn
	} else {
		s.q = newQueue(s.cfg.buffer, s.cfg.policy, s.droppedByQueue)
		s.startCallback(fn)
	}
	live, err := c.subscribe(ctx, s)
	if live == nil {
		return nil, err
	}
	return live, err
}

// feedCallback pops q's messages and calls fn with each, one at a time, acknowledging each
// after fn returns unless manual; it closes done when q is closed and drained.
func feedCallback(q *Queue[*Message], fn func(*Message), manual bool, done chan struct{}) {
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
}

// startCallback starts the goroutine that feeds the queue's messages to fn. It ends when the
// queue is closed and drained.
func (s *Subscription) startCallback(fn func(*Message)) {
	s.cbDone = make(chan struct{})
	manual := s.cfg.manualAck || s.cfg.autoAck
	go feedCallback(s.q, fn, manual, s.cbDone)
}

var errInlineForm = fmt.Errorf("%w: SubInline applies to SubscribeCallback only", ErrInvalidOption)

func (c *Client) newSubscription(filters []TopicFilter, opts []SubOption) (*Subscription, error) {
	return c.newSub(filters, opts, false)
}

// newSub builds a subscription from its options; inlineOK says the form can call a
// callback on the read loop (SubInline).
func (c *Client) newSub(filters []TopicFilter, opts []SubOption, inlineOK bool) (*Subscription, error) {
	if len(filters) == 0 {
		return nil, fmt.Errorf("%w: no topic filter", ErrInvalidTopic)
	}
	cfg := subConfig{buffer: c.cfg.subBuffer, policy: c.cfg.dropPolicy}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.inline && !inlineOK {
		return nil, errInlineForm
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
		ready:    make(chan struct{}),
	}, nil
}

// checkFilters validates a subscription against what the broker granted in CONNACK (info;
// nil before the first connection).
func checkFilters(s *Subscription, info *ConnackInfo) error {
	if info == nil {
		return nil
	}
	if info.Version == packet.Version311 {
		if err := check311Sub(s); err != nil {
			return err
		}
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

// subscribe registers the routes, sends SUBSCRIBE and waits for SUBACK; before Connect it
// leaves the SUBSCRIBE to the first connection and returns at once. It returns nil when the
// subscription did not survive.
func (c *Client) subscribe(ctx context.Context, s *Subscription) (*Subscription, error) {
	err := checkFilters(s, c.info.Load())
	if err == nil && c.speaks311() {
		err = check311Sub(s)
	}
	if err != nil {
		s.close()
		s.settle(nil, err)
		return nil, err
	}
	// Route first: retained messages may arrive before SUBACK, and a resumed session's
	// queued messages right after CONNACK. This also picks the subscription identifier.
	c.addRoutes(s)
	p := s.subscribePacket()
	if c.deferSubscribe(s, p) {
		return s, nil
	}
	res, err := c.request(ctx, p)
	err = s.settle(res, err)
	if s.dead {
		return nil, err
	}
	return s, err
}

// subscribePacket builds the SUBSCRIBE for s, without its packet identifier.
func (s *Subscription) subscribePacket() *packet.Subscribe {
	p := &packet.Subscribe{SubscriptionID: s.id, UserProperties: s.cfg.props}
	for _, f := range s.filters {
		p.Subscriptions = append(p.Subscriptions, packet.Subscription{Filter: f.Topic, QoS: f.QoS,
			NoLocal: f.NoLocal, RetainAsPublished: f.RetainAsPublished, RetainHandling: f.RetainHandling})
	}
	return p
}

// deferSubscribe keeps the SUBSCRIBE of a subscription made before Connect for the first
// connection, and reports whether it did. Packet identifiers are given out only when it is
// sent: the store, loaded by Connect, may hold identifiers still in use.
func (c *Client) deferSubscribe(s *Subscription, p *packet.Subscribe) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.closed {
		return false
	}
	c.early = append(c.early, &request{pkt: p, done: make(chan struct{}), sub: s})
	return true
}

// sendEarlyLocked sends, on the first connection, the SUBSCRIBEs of subscriptions made
// before Connect, checked against the CONNACK first. Called by install before the pending
// requests are written. Caller holds c.mu.
func (c *Client) sendEarlyLocked(cn *conn) {
	if len(c.early) == 0 {
		return
	}
	var failed []*request
	for _, r := range c.early {
		p := r.pkt.(*packet.Subscribe)
		if err := checkFilters(r.sub, cn.info); err != nil {
			r.err = err
			failed = append(failed, r)
			continue
		}
		if !cn.info.SubscriptionIDs && r.sub.cfg.subID == 0 {
			p.SubscriptionID = 0 // one of ours, which this broker does not take
		}
		if err := requestFits(cn.info, p); err != nil {
			r.err = err
			failed = append(failed, r)
			continue
		}
		id, ok := c.allocIDLocked()
		if !ok {
			// Only a store holding 65,535 in-flight messages can get here.
			r.err = fmt.Errorf("%w: no free packet identifier for a subscription made before Connect", ErrConnectionLost)
			failed = append(failed, r)
			continue
		}
		p.PacketID = id
		c.requests[id] = r // written with the other pending requests
	}
	clear(c.early)
	c.early = c.early[:0]
	for _, r := range failed {
		c.log.Warn("tern: subscription made before Connect refused by the broker's capabilities",
			"filters", len(r.sub.filters), "err", r.err)
		c.settleLater(r.sub, r.err)
	}
}

// settleLater fails s with err on a goroutine of its own: settling takes locks that must not
// be taken under c.mu. Caller holds c.mu.
func (c *Client) settleLater(s *Subscription, err error) {
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		s.settle(nil, err)
	}()
}

// dropEarly forgets the unsent SUBSCRIBE of s and reports whether there was one.
func (c *Client) dropEarly(s *Subscription) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range c.early {
		if r.sub == s {
			c.early = slices.Delete(c.early, i, i+1)
			return true
		}
	}
	return false
}

// settle records the broker's answer to the SUBSCRIBE of s (res, or the error that stands
// for it), once: results per filter, routes kept only for granted filters, the subscription
// closed if nothing was granted. It returns the error Subscribe reports.
func (s *Subscription) settle(res packet.Packet, err error) error {
	s.settleOnce.Do(func() {
		s.readyErr = s.c.applySuback(s, res, err)
		close(s.ready)
	})
	return s.readyErr
}

func (c *Client) applySuback(s *Subscription, res packet.Packet, err error) error {
	suback, _ := res.(*packet.Suback)
	if err == nil && (suback == nil || len(suback.ReasonCodes) != len(s.filters)) {
		n := 0
		if suback != nil {
			n = len(suback.ReasonCodes)
		}
		err = fmt.Errorf("%w: SUBACK has %d reason codes for %d filters", ErrConnectionLost, n, len(s.filters))
	}
	if err != nil {
		s.dead = true
		c.removeRoutes(s)
		s.close()
		return err
	}
	results := make([]FilterResult, len(s.filters))
	refused := 0
	for i, code := range suback.ReasonCodes {
		results[i].Filter = s.filters[i].Topic
		if code.IsError() {
			refused++
			results[i].Err = &ReasonCodeError{Op: "subscribe", Code: code, Reason: suback.ReasonString, UserProperties: suback.UserProperties}
		} else {
			results[i].GrantedQoS = byte(code)
		}
	}
	// Keep routing only the granted filters (unless the subscription has ended meanwhile).
	c.subMu.Lock()
	s.results = results
	if _, live := c.subs[s]; live {
		for i, r := range results {
			if r.Err != nil {
				c.dropFilterLocked(s.filters[i].Topic, s)
			}
		}
	}
	c.subMu.Unlock()
	if refused == 0 {
		return nil
	}
	serr := &SubscribeError{Results: append([]FilterResult(nil), results...)}
	if refused == len(s.filters) {
		s.dead = true
		c.removeRoutes(s)
		s.close()
	}
	return serr
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
			if len(c.byID[c.nextSubID]) == 0 && len(c.orphans[c.nextSubID]) == 0 {
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
		c.byFilter[f.Topic] = append(c.byFilter[f.Topic], s)
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
		if !c.dropFilterLocked(f.Topic, s) {
			continue
		}
		if len(c.byFilter[f.Topic]) == 0 {
			unused = append(unused, f.Topic)
			continue
		}
		// Others still use the filter, so no UNSUBSCRIBE: if the broker holds it under the
		// identifier of s, the messages tagged with it are now theirs.
		if id := c.brokerID[f.Topic]; id != 0 && id == s.id && !c.idHoldsLocked(id, f.Topic) {
			c.orphans[id] = append(c.orphans[id], f.Topic)
		}
	}
	return unused
}

// dropFilterLocked stops routing filter to s and reports whether it was routed. When no
// subscription uses the filter any more, the broker's subscription to it is forgotten too
// (the caller unsubscribes). Caller holds subMu.
func (c *Client) dropFilterLocked(filter string, s *Subscription) bool {
	if !c.routes.Remove(filter, s) {
		return false
	}
	list := slices.DeleteFunc(c.byFilter[filter], func(x *Subscription) bool { return x == s })
	if len(list) > 0 {
		c.byFilter[filter] = list
		return true
	}
	delete(c.byFilter, filter)
	if id, ok := c.brokerID[filter]; ok {
		c.dropOrphanLocked(id, filter)
		delete(c.brokerID, filter)
	}
	return true
}

// idHoldsLocked reports whether a live subscription with identifier id has filter.
func (c *Client) idHoldsLocked(id uint32, filter string) bool {
	for _, x := range c.byID[id] {
		if slices.ContainsFunc(x.filters, func(f TopicFilter) bool { return f.Topic == filter }) {
			return true
		}
	}
	return false
}

func (c *Client) dropOrphanLocked(id uint32, filter string) {
	list, ok := c.orphans[id]
	if !ok {
		return
	}
	list = slices.DeleteFunc(list, func(f string) bool { return f == filter })
	if len(list) == 0 {
		delete(c.orphans, id)
	} else {
		c.orphans[id] = list
	}
}

// requestWrittenLocked records a SUBSCRIBE or UNSUBSCRIBE just written to the connection.
// A SUBSCRIBE replaces the broker's subscription to each of its filters, identifier
// included, so the filter is now held under this packet's identifier. Caller holds c.mu.
func (c *Client) requestWrittenLocked(p packet.Packet) {
	c.countRequest(p)
	sp, ok := p.(*packet.Subscribe)
	if !ok {
		return
	}
	c.subMu.Lock()
	for _, f := range sp.Subscriptions {
		if _, used := c.byFilter[f.Filter]; !used {
			continue // ended before its SUBSCRIBE went out: its UNSUBSCRIBE follows
		}
		if old, ok := c.brokerID[f.Filter]; ok && old != sp.SubscriptionID {
			c.dropOrphanLocked(old, f.Filter)
		}
		c.brokerID[f.Filter] = sp.SubscriptionID
	}
	c.subMu.Unlock()
}

// forgetBrokerSubsLocked forgets what the broker held: it lost the session. Caller holds
// c.mu.
func (c *Client) forgetBrokerSubsLocked() {
	c.subMu.Lock()
	clear(c.brokerID)
	clear(c.orphans)
	c.subMu.Unlock()
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
	if c.dropEarly(s) {
		// Made before Connect and never sent: the broker knows nothing of it.
		s.settle(nil, ErrUnsubscribed)
		return nil
	}
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
	cancelled bool          // guarded by c.mu: its caller gave up; it holds its id until answered
	sub       *Subscription // the SUBSCRIBE of a subscription made before Connect: nobody waits on done
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
		c.requestWrittenLocked(p)
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
	if r == nil {
		c.mu.Unlock()
		return nil // unknown: nothing waits for it
	}
	if r.pkt.Type()+1 != want {
		c.mu.Unlock()
		// The identifier is in use by the other kind of request: left unanswered, its
		// caller would wait until its ctx ends while the broker thinks it answered.
		return &packet.Error{Code: packet.ProtocolError,
			Detail: fmt.Sprintf("%v for the packet identifier of a %v", want, r.pkt.Type())}
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
	if r.sub != nil {
		r.sub.settle(res, nil)
	}
	return nil
}

func (c *Client) handleSuback(s *packet.Suback) error {
	return c.finishRequest(s.PacketID, packet.SUBACK, s)
}

func (c *Client) handleUnsuback(u *packet.Unsuback) error {
	return c.finishRequest(u.PacketID, packet.UNSUBACK, u)
}
