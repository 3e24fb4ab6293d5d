package tern

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"

	"github.com/ternmq/tern/packet"
)

// PoolRouting decides which member of the publisher pool (WithPublisherPool) carries a
// publish. Whatever the policy, only connected members are chosen; with none connected the
// main connection carries it (counted in Stats().PoolFallbacks).
type PoolRouting uint8

const (
	// PoolRoundRobin takes the members in turn, skipping those that are down. Messages to
	// one topic may reach the broker out of order, since members run in parallel.
	PoolRoundRobin PoolRouting = iota
	// PoolHashByTopic sends every message of a topic to the same member (FNV-1a of the
	// topic), so per-topic order holds as it does on one connection. While that member is
	// down its topics go to the next connected one in the ring, and order across the
	// switch is not kept.
	PoolHashByTopic
	// PoolLeastInFlight takes the connected member with the fewest QoS 1/2 publishes
	// awaiting acknowledgement (ties: the first in turn), which evens out members whose
	// acknowledgements come at different speeds. It reads each member's count under that
	// member's session lock: n lock acquisitions per publish.
	PoolLeastInFlight
)

func (r PoolRouting) String() string {
	switch r {
	case PoolRoundRobin:
		return "round-robin"
	case PoolHashByTopic:
		return "hash-by-topic"
	case PoolLeastInFlight:
		return "least-in-flight"
	}
	return "unknown"
}

// pool is the set of publish-only clients behind WithPublisherPool. Made by Connect, stopped
// by Disconnect; members are immutable once made.
type pool struct {
	routing PoolRouting
	members []*Client
	next    atomic.Uint64 // round-robin cursor
}

// defaultPoolClientID names member i after the parent; an empty parent id leaves the choice
// to the broker.
func defaultPoolClientID(parent string, i int) string {
	if parent == "" {
		return ""
	}
	return fmt.Sprintf("%s-pub-%d", parent, i)
}

// memberBuilder runs the parent's CONNECT builder for a pool member (a token or password it
// rotates serves the member too) and then puts back what makes the member a member: its own
// client id and a clean session that ends with the connection. Without that, a builder that
// sets the id would give every member the parent's, and they would take each other over.
func memberBuilder(build func(context.Context, *packet.Connect) error, id string) func(context.Context, *packet.Connect) error {
	return func(ctx context.Context, p *packet.Connect) error {
		if err := build(ctx, p); err != nil {
			return err
		}
		p.ClientID, p.CleanStart, p.SessionExpiry = id, true, 0
		return nil
	}
}

// startPool makes and starts the pool members. Called by Connect once the client runs; the
// members connect in the background.
func (c *Client) startPool() {
	n := c.cfg.poolSize
	if n < 2 {
		return
	}
	idFn := c.cfg.poolClientID
	if idFn == nil {
		idFn = defaultPoolClientID
	}
	parent := c.ClientID()
	p := &pool{routing: c.cfg.poolRouting}
	for i := range n {
		cfg := *c.cfg // shares read-only values: brokers, TLS config, credentials
		cfg.clientID = idFn(parent, i+1)
		cfg.cleanStart, cfg.cleanOnReconnect, cfg.sessionExpiry = true, true, 0
		cfg.store, cfg.will, cfg.onUnrouted = nil, nil, nil
		cfg.onReconnect, cfg.onUp, cfg.onDown, cfg.onConnectErr, cfg.onServerDisc = nil, nil, nil, nil, nil
		// A member's session never outlives its connection, so a reconnect always finds it
		// gone: what the member had in flight is republished whatever the parent's policy.
		cfg.sessionLoss = Republish
		if build := cfg.connectBuilder; build != nil {
			cfg.connectBuilder = memberBuilder(build, cfg.clientID)
		}
		cfg.background = true
		cfg.poolSize = 0
		cfg.logger = c.log.With("pool_member", i+1)
		if err := cfg.validate(); err != nil {
			// Only a bad WithPublisherPoolClientID result gets here.
			c.log.Error("tern: publisher pool member not started", "member", i+1, "err", err)
			continue
		}
		p.members = append(p.members, newClient(&cfg))
	}
	if len(p.members) == 0 {
		return
	}
	// Published under c.mu, so a Disconnect running meanwhile either sees the pool (and
	// stops it: a member's Connect after its Disconnect returns ErrClosed) or has closed
	// the client first.
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.pool.Store(p)
	c.mu.Unlock()
	for _, m := range p.members {
		m.Connect(context.Background()) // background: returns at once
	}
}

// stopPool disconnects every member, in parallel, and returns their errors joined.
func (c *Client) stopPool(ctx context.Context) error {
	p := c.pool.Load()
	if p == nil {
		return nil
	}
	errs := make([]error, len(p.members))
	var wg sync.WaitGroup
	for i, m := range p.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Disconnect(ctx); err != nil {
				errs[i] = fmt.Errorf("pool member %d: %w", i+1, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pick returns the connected member that carries a publish to topic, or nil when none is
// connected.
func (p *pool) pick(topic string) *Client {
	n := len(p.members)
	var start int
	switch p.routing {
	case PoolHashByTopic:
		h := fnv.New32a()
		h.Write([]byte(topic))
		start = int(h.Sum32() % uint32(n))
	case PoolLeastInFlight:
		return p.leastInFlight()
	default:
		start = int(p.next.Add(1) % uint64(n))
	}
	for k := range n {
		if m := p.members[(start+k)%n]; m.Connected() {
			return m
		}
	}
	return nil
}

func (p *pool) leastInFlight() *Client {
	n := len(p.members)
	start := int(p.next.Add(1) % uint64(n))
	var best *Client
	bestUse := 0
	for k := range n {
		m := p.members[(start+k)%n]
		m.mu.Lock()
		up, use := m.conn != nil, m.inUse
		m.mu.Unlock()
		if up && (best == nil || use < bestUse) {
			best, bestUse = m, use
		}
	}
	return best
}

// poolRoute returns the member that carries a publish to topic, or nil for the main
// connection: no pool, or no member connected (a fallback, counted).
func (c *Client) poolRoute(topic string) *Client {
	p := c.pool.Load()
	if p == nil {
		return nil
	}
	m := p.pick(topic)
	if s := c.st; s != nil {
		if m == nil {
			s.PoolFallbacks.Add(1)
		} else {
			s.PoolPublishes.Add(1)
		}
	}
	return m
}

// flushPool waits for the connected members' queued bytes to be written.
func (c *Client) flushPool(ctx context.Context) error {
	p := c.pool.Load()
	if p == nil {
		return nil
	}
	var errs []error
	for _, m := range p.members {
		if err := m.Flush(ctx); err != nil && !errors.Is(err, ErrNotConnected) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
