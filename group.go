package tern

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// ClientGroup is N independent clients, one session each, usually to N different brokers (a
// bridge, per-tenant brokers, a broker fleet that does not share sessions), driven as one:
// Connect and Disconnect all, publish under a GroupPublishPolicy, subscribe on every member
// with the messages merged into one stream (Message.Member says which member received each).
//
// It is not a failover mechanism: every member is itself, with its own session, and a
// message sent to one member is not resent to another when that member is down. For one
// session served by interchangeable brokers use WithBrokers on a single Client.
//
// Each member is a full Client (with its own supervisor and goroutines); Member and Members
// give access to them for anything the group does not cover. All methods are safe for
// concurrent use.
type ClientGroup struct {
	names   []string
	members []*Client
	byName  map[string]*Client
	policy  GroupPublishPolicy
	next    atomic.Uint64 // round-robin cursor

	mu     sync.Mutex
	closed bool
	subs   map[*GroupSubscription]struct{} // live merged subscriptions, stopped by Disconnect
}

// GroupMember describes one member of a ClientGroup.
type GroupMember struct {
	// Name identifies the member in Member, in errors and in Message.Member. Default:
	// "member-N", N its 1-based position. Names must be unique.
	Name string
	// Options configure the member's client (broker, credentials, TLS, client id, ...),
	// applied after the group's WithGroupOptions, so they win.
	Options []Option
}

// GroupPublishPolicy decides which members ClientGroup.Publish sends a message to.
type GroupPublishPolicy uint8

const (
	// GroupBroadcast sends every message to every member. Publish returns when all have
	// succeeded (as each member's Publish defines success for the QoS); otherwise its error
	// is a *GroupError naming each member that failed.
	GroupBroadcast GroupPublishPolicy = iota
	// GroupRoundRobin sends each message to one member, in turn, skipping members that are
	// not connected at that moment (when none is, the member whose turn it is waits for its
	// connection, bounded by ctx).
	GroupRoundRobin
	// GroupHashByTopic sends each message to one member chosen by the topic (FNV-1a), so a
	// topic always goes to the same member and keeps its order. A member that is down is not
	// skipped: its messages wait for its connection, bounded by ctx.
	GroupHashByTopic
)

func (p GroupPublishPolicy) String() string {
	switch p {
	case GroupBroadcast:
		return "broadcast"
	case GroupRoundRobin:
		return "round-robin"
	case GroupHashByTopic:
		return "hash-by-topic"
	}
	return "unknown"
}

// GroupOption configures a ClientGroup; pass options to NewClientGroup.
type GroupOption func(*groupConfig) error

type groupConfig struct {
	policy GroupPublishPolicy
	shared []Option
}

// WithGroupPublishPolicy sets how ClientGroup.Publish picks members. Default: GroupBroadcast.
func WithGroupPublishPolicy(p GroupPublishPolicy) GroupOption {
	return func(g *groupConfig) error {
		if p > GroupHashByTopic {
			return fmt.Errorf("%w: unknown group publish policy %d", ErrInvalidOption, p)
		}
		g.policy = p
		return nil
	}
}

// WithGroupOptions sets client options every member gets, before its own
// GroupMember.Options (keepalive, logger, stats, backoff, ...).
func WithGroupOptions(opts ...Option) GroupOption {
	return func(g *groupConfig) error {
		g.shared = append(g.shared, opts...)
		return nil
	}
}

// GroupError reports the members an operation failed on. errors.Is and errors.As see each
// member's error.
type GroupError struct {
	Errs map[string]error // by member name
}

func (e *GroupError) Error() string {
	names := make([]string, 0, len(e.Errs))
	for n := range e.Errs {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString("tern: group:")
	for i, n := range names {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " member %s: %v", n, e.Errs[n])
	}
	return b.String()
}

func (e *GroupError) Unwrap() []error {
	errs := make([]error, 0, len(e.Errs))
	for _, err := range e.Errs {
		errs = append(errs, err)
	}
	return errs
}

// groupErr returns nil for no errors, else a *GroupError.
func groupErr(errs map[string]error) error {
	if len(errs) == 0 {
		return nil
	}
	return &GroupError{Errs: errs}
}

// NewClientGroup makes one client per member (see New; every option is validated) and
// connects nothing: call Connect. Two members that end up with the same non-empty client id
// (shared options, say) would take each other's session on a shared broker, so later ones get
// "-2", "-3", ... appended.
func NewClientGroup(members []GroupMember, opts ...GroupOption) (*ClientGroup, error) {
	if len(members) == 0 {
		return nil, fmt.Errorf("%w: a group needs at least one member", ErrInvalidOption)
	}
	var gc groupConfig
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&gc); err != nil {
			return nil, err
		}
	}
	g := &ClientGroup{byName: make(map[string]*Client), policy: gc.policy,
		subs: make(map[*GroupSubscription]struct{})}
	ids := make(map[string]bool)
	for i, gm := range members {
		name := gm.Name
		if name == "" {
			name = fmt.Sprintf("member-%d", i+1)
		}
		if g.byName[name] != nil {
			return nil, fmt.Errorf("%w: two group members named %q", ErrInvalidOption, name)
		}
		c, err := New(append(slices.Clone(gc.shared), gm.Options...)...)
		if err != nil {
			return nil, fmt.Errorf("group member %s: %w", name, err)
		}
		c.cfg.groupMember = name
		if id := c.cfg.clientID; id != "" {
			unique := id
			for k := 2; ids[unique]; k++ {
				unique = fmt.Sprintf("%s-%d", id, k)
			}
			c.cfg.clientID, c.clientID = unique, unique
			ids[unique] = true
		}
		g.names = append(g.names, name)
		g.members = append(g.members, c)
		g.byName[name] = c
	}
	return g, nil
}

// Member returns the client of the member called name, or nil.
func (g *ClientGroup) Member(name string) *Client { return g.byName[name] }

// Members returns the members' clients in member order.
func (g *ClientGroup) Members() []*Client { return slices.Clone(g.members) }

// Names returns the members' names in member order.
func (g *ClientGroup) Names() []string { return slices.Clone(g.names) }

// each runs fn for every member in parallel and collects the errors by member name.
func (g *ClientGroup) each(fn func(name string, c *Client) error) map[string]error {
	errs := make([]error, len(g.members))
	var wg sync.WaitGroup
	for i, c := range g.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(g.names[i], c)
		}()
	}
	wg.Wait()
	out := make(map[string]error)
	for i, err := range errs {
		if err != nil {
			out[g.names[i]] = err
		}
	}
	return out
}

// Connect connects every member, in parallel, each bounded by ctx and its connect timeout.
// It returns nil when all are connected, else a *GroupError naming those that failed; the
// others stay connected and usable, and Connect may be called again to retry the failed
// ones (a member already running counts as success).
func (g *ClientGroup) Connect(ctx context.Context) error {
	return groupErr(g.each(func(_ string, c *Client) error {
		if err := c.Connect(ctx); err != nil && !errors.Is(err, ErrAlreadyConnected) {
			return err
		}
		return nil
	}))
}

// Disconnect disconnects every member in parallel (see Client.Disconnect), then ends the
// group's merged subscriptions and waits, bounded by ctx, for the goroutines that merge
// subscriptions and run their callbacks (a callback still running when ctx ends is reported
// in the error and left to finish). Messages a member received that the merged stream had
// not handed over are not acknowledged to the broker: a session that outlives the connection
// gets them again on its next connection. It returns a *GroupError naming members whose
// Disconnect failed. The group cannot be used again.
func (g *ClientGroup) Disconnect(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	subs := make([]*GroupSubscription, 0, len(g.subs))
	for gs := range g.subs {
		subs = append(subs, gs)
	}
	clear(g.subs)
	g.mu.Unlock()
	// Members first: a message the merging goroutines still hold when they stop is
	// acknowledged, and only on a closed connection is that acknowledgement not sent, so a
	// persistent session keeps it for the next process instead of losing it unseen.
	err := groupErr(g.each(func(_ string, c *Client) error { return c.Disconnect(ctx) }))
	for _, gs := range subs {
		gs.stop()
	}
	for _, gs := range subs {
		if werr := gs.wait(ctx); werr != nil {
			// A callback that does not return: its goroutine outlives Disconnect.
			return errors.Join(err, fmt.Errorf("tern: group: merged subscription still running: %w", werr))
		}
	}
	return err
}

// Publish sends m under the group's policy (see GroupPublishPolicy), waiting as each
// member's Publish does for its QoS, bounded by ctx. Broadcast costs one PublishAsync per
// member, then waits for every outcome; the other policies cost one member's Publish.
func (g *ClientGroup) Publish(ctx context.Context, m PublishOptions) error {
	switch g.policy {
	case GroupRoundRobin:
		n := len(g.members)
		start := int(g.next.Add(1) % uint64(n))
		for k := range n {
			if c := g.members[(start+k)%n]; c.Connected() {
				return g.one(ctx, (start+k)%n, m)
			}
		}
		return g.one(ctx, start, m)
	case GroupHashByTopic:
		h := fnv.New32a()
		h.Write([]byte(m.Topic))
		return g.one(ctx, int(h.Sum32()%uint32(len(g.members))), m)
	}
	errs := make(map[string]error)
	toks := make([]*PublishToken, len(g.members))
	for i, c := range g.members {
		tok, err := c.PublishAsync(ctx, m)
		if err != nil {
			errs[g.names[i]] = err
		}
		toks[i] = tok
	}
	for i, tok := range toks {
		if tok == nil {
			continue
		}
		if err := tok.Wait(ctx); err != nil {
			errs[g.names[i]] = err
		}
	}
	return groupErr(errs)
}

// one publishes on member i, naming it in the error.
func (g *ClientGroup) one(ctx context.Context, i int, m PublishOptions) error {
	if err := g.members[i].Publish(ctx, m); err != nil {
		return &GroupError{Errs: map[string]error{g.names[i]: err}}
	}
	return nil
}

// GroupSubscription is one subscription made on every member by ClientGroup.Subscribe,
// SubscribeQueue or SubscribeCallback. Each member's part is an ordinary Subscription
// (Member); a goroutine per member moves its messages into the merged stream, in the order
// the member received them (no order holds across members). The merged channel or queue is
// closed once every member's part has ended and been drained.
type GroupSubscription struct {
	g     *ClientGroup
	names []string // members with a live part, in member order
	parts map[string]*Subscription

	ctx     context.Context // ended by stop: the merging goroutines give up
	stop    context.CancelFunc
	merging sync.WaitGroup
	done    chan struct{} // closed when every merging goroutine (and the callback) ended
}

// Member returns the part of the subscription on the member called name, or nil when that
// member's SUBSCRIBE failed.
func (gs *GroupSubscription) Member(name string) *Subscription { return gs.parts[name] }

// Names returns the members the subscription lives on, in member order.
func (gs *GroupSubscription) Names() []string { return slices.Clone(gs.names) }

// UnsubscribeMember ends the subscription on one member (see Client.Unsubscribe); the
// other members' messages keep flowing. The messages that member had buffered still reach
// the merged stream.
func (gs *GroupSubscription) UnsubscribeMember(ctx context.Context, name string) error {
	s := gs.parts[name]
	if s == nil {
		return fmt.Errorf("%w: no member %q in this subscription", ErrInvalidOption, name)
	}
	return s.Unsubscribe(ctx)
}

// Unsubscribe ends the subscription on every member, in parallel, and returns a *GroupError
// naming those whose UNSUBSCRIBE failed. The merged stream ends once the members' buffered
// messages have been handed over.
func (gs *GroupSubscription) Unsubscribe(ctx context.Context) error {
	errs := make(map[string]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, s := range gs.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Unsubscribe(ctx); err != nil {
				mu.Lock()
				errs[name] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return groupErr(errs)
}

// wait waits for the merging goroutines and the callback, or for ctx.
func (gs *GroupSubscription) wait(ctx context.Context) error {
	select {
	case <-gs.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Subscribe subscribes every member to filters (see Client.Subscribe; opts apply to each
// member's part) and merges their messages into one channel, buffered as SubBuffer says.
// Each message must be acknowledged as usual; Message.Member names the member it came from.
// If some members' SUBSCRIBE fails, the subscription lives on the others and the error is a
// *GroupError naming the failures; if all fail, the subscription is nil. Cost: one goroutine
// per member and one channel hand-over per message beside the member's own.
func (g *ClientGroup) Subscribe(ctx context.Context, filters []TopicFilter, opts ...SubOption) (<-chan *Message, *GroupSubscription, error) {
	cfg, err := g.subConfig(opts)
	if err != nil {
		return nil, nil, err
	}
	out := make(chan *Message, cfg.buffer)
	gs, err := g.subscribe(ctx, filters, opts, func(m *Message, quit <-chan struct{}) bool {
		select {
		case out <- m:
			return true
		case <-quit:
			return false
		}
	}, func() { close(out) })
	if gs == nil {
		return nil, nil, err
	}
	return out, gs, err
}

// SubscribeQueue is Subscribe with a merged Queue instead of a channel. The merged queue
// blocks when full; the members' own buffers apply the drop policy.
func (g *ClientGroup) SubscribeQueue(ctx context.Context, filters []TopicFilter, opts ...SubOption) (*Queue[*Message], *GroupSubscription, error) {
	cfg, err := g.subConfig(opts)
	if err != nil {
		return nil, nil, err
	}
	q := newQueue[*Message](cfg.buffer, Block, nil)
	gs, err := g.subscribe(ctx, filters, opts, func(m *Message, quit <-chan struct{}) bool {
		return q.push(m, quit, nil) == pushQueued
	}, q.close)
	if gs == nil {
		return nil, nil, err
	}
	return q, gs, err
}

// SubscribeCallback is Subscribe calling fn for each message of every member, one at a time
// (never concurrently), on a goroutine of the subscription's own. The message is
// acknowledged when fn returns unless SubManualAck or SubAutoAck is given.
func (g *ClientGroup) SubscribeCallback(ctx context.Context, filters []TopicFilter, fn func(*Message), opts ...SubOption) (*GroupSubscription, error) {
	if fn == nil {
		return nil, fmt.Errorf("%w: nil callback", ErrInvalidOption)
	}
	cfg, err := g.subConfig(opts)
	if err != nil {
		return nil, err
	}
	q := newQueue[*Message](cfg.buffer, Block, nil)
	manual := cfg.manualAck || cfg.autoAck
	cbDone := make(chan struct{})
	go feedCallback(q, fn, manual, cbDone)
	gs, err := g.subscribe(ctx, filters, opts, func(m *Message, quit <-chan struct{}) bool {
		return q.push(m, quit, nil) == pushQueued
	}, func() {
		q.close()
		<-cbDone
	})
	if gs == nil {
		return nil, err
	}
	return gs, err
}

// subConfig evaluates opts as the first member would, for the merged buffer's size.
func (g *ClientGroup) subConfig(opts []SubOption) (subConfig, error) {
	c := g.members[0]
	cfg := subConfig{buffer: c.cfg.subBuffer, policy: c.cfg.dropPolicy}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// subscribe makes each member's part as a queue subscription and starts the goroutines
// that move their messages into the merged stream through put; end runs once they have all
// ended. put reports false when quit closed before the message was taken.
func (g *ClientGroup) subscribe(ctx context.Context, filters []TopicFilter, opts []SubOption,
	put func(m *Message, quit <-chan struct{}) bool, end func()) (*GroupSubscription, error) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, ErrClosed
	}
	g.mu.Unlock()
	gs := &GroupSubscription{g: g, parts: make(map[string]*Subscription), done: make(chan struct{})}
	gs.ctx, gs.stop = context.WithCancel(context.Background())
	queues := make([]*Queue[*Message], len(g.members))
	var mu sync.Mutex
	errs := g.each(func(name string, c *Client) error {
		q, s, err := c.SubscribeQueue(ctx, filters, opts...)
		if s != nil {
			mu.Lock()
			gs.parts[name] = s
			mu.Unlock()
		}
		for i, n := range g.names {
			if n == name && s != nil {
				queues[i] = q
			}
		}
		return err
	})
	if len(gs.parts) == 0 {
		gs.stop()
		end()
		close(gs.done)
		return nil, groupErr(errs)
	}
	for i, q := range queues {
		if q == nil {
			continue
		}
		gs.names = append(gs.names, g.names[i])
		gs.merging.Add(1)
		go gs.merge(q, put)
	}
	go func() {
		gs.merging.Wait()
		gs.stop() // releases the context
		end()
		close(gs.done)
	}()
	g.mu.Lock()
	if g.closed {
		// Disconnect ran meanwhile and did not see this subscription.
		g.mu.Unlock()
		gs.stop()
		return gs, ErrClosed
	}
	g.subs[gs] = struct{}{}
	g.mu.Unlock()
	return gs, groupErr(errs)
}

// merge moves one member's messages into the merged stream until the member's queue ends
// or the group stops the subscription; a message it cannot hand over is acknowledged (its
// subscription is ending, as Client.Unsubscribe treats buffered messages).
func (gs *GroupSubscription) merge(q *Queue[*Message], put func(*Message, <-chan struct{}) bool) {
	defer gs.merging.Done()
	for {
		m, ok := q.Pop(gs.ctx)
		if !ok {
			break
		}
		if !put(m, gs.ctx.Done()) {
			m.Ack()
		}
	}
	for { // stopped: what is left is not handed over
		m, ok := q.TryPop()
		if !ok {
			return
		}
		m.Ack()
	}
}
