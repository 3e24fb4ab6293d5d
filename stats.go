package tern

import (
	"sync/atomic"

	"github.com/ternmq/tern/packet"
)

// Stats is a snapshot of a client's counters since New. All zero unless WithStats is given.
//
// With WithPublisherPool, every counter includes the pool members': their connections
// (Connects, ConnectErrors, ConnectionLost, ...) and their publishes (PublishSent,
// PublishAcked, ...), so the parent's Stats describes all the traffic of the client;
// PoolPublishes tells how many publishes the members carried.
type Stats struct {
	Connects       uint64 // successful CONNECT/CONNACK exchanges, counted before the connection is used
	ConnectErrors  uint64 // failed connection attempts
	ConnectionLost uint64 // connections that ended other than by Disconnect
	PublishSent    uint64 // PUBLISH packets handed to the writer, resends included
	PublishResent  uint64 // PUBLISH packets resent with DUP after a reconnect
	PublishAcked   uint64 // QoS 1/2 publishes completed with success
	PublishFailed  uint64 // QoS 1/2 publishes refused by the broker or failed by policy
	Received       uint64 // PUBLISH packets received
	Delivered      uint64 // messages handed to subscriptions (one per matching subscription)
	Dropped        uint64 // messages dropped by a full subscription's policy
	Unrouted       uint64 // matched no subscription, no WithUnroutedHandler: acknowledged and dropped
	AcksSent       uint64 // PUBACK and PUBREC packets sent for received messages
	PingTimeouts   uint64 // connections closed because PINGRESP did not come
	// ReceiveMaxExceeded counts messages that arrived beyond the Receive Maximum this client
	// advertised (tolerated unless WithStrictReceiveMaximum).
	ReceiveMaxExceeded uint64
	// RedirectsRefused counts server redirects not followed: lowering the transport's
	// security, or refused by the RedirectPolicy.
	RedirectsRefused uint64
	// Oversized counts messages above WithMaximumPacketSize that an MQTT 3.1.1 broker sent
	// (it cannot be told the limit): skipped unread, acknowledged and logged.
	Oversized uint64
	// ReadStalls counts deliveries that stopped the read loop until a consumer made room:
	// QoS 0 messages, or QoS 1/2 past the hold cap, into a full Block subscription.
	ReadStalls uint64

	ServerDisconnects uint64 // DISCONNECT packets received from the broker
	SubscribesSent    uint64 // SUBSCRIBE packets written, resends included
	UnsubscribesSent  uint64 // UNSUBSCRIBE packets written, resends included
	// PoolPublishes counts publishes carried by a publisher pool member (WithPublisherPool);
	// PoolFallbacks those that went to the main connection because no member was connected.
	PoolPublishes, PoolFallbacks uint64

	// Gauges, read when Stats is called (no cost between calls).

	// InFlight is the number of outbound QoS 1/2 publishes not yet completed (waiting for
	// a connection or for PUBACK/PUBCOMP), on the main connection and the pool's.
	InFlight uint64
	// Subscriptions is the number of live subscriptions (made and not ended).
	Subscriptions uint64
}

// stats holds the live counters. The client keeps a nil *stats when counting is off, so each
// counting site costs one predictable branch.
type stats struct {
	Connects, ConnectErrors, ConnectionLost                 atomic.Uint64
	PublishSent, PublishResent, PublishAcked, PublishFailed atomic.Uint64
	Received, Delivered, Dropped, Unrouted, AcksSent        atomic.Uint64
	PingTimeouts, ReceiveMaxExceeded, ReadStalls, Oversized atomic.Uint64
	RedirectsRefused                                        atomic.Uint64
	ServerDisconnects, SubscribesSent, UnsubscribesSent     atomic.Uint64
	PoolPublishes, PoolFallbacks                            atomic.Uint64
}

// Stats returns the current counters, the publisher pool's included (see Stats). It is
// safe to call from any goroutine; with a pool it reads each member's counters too.
func (c *Client) Stats() Stats {
	s := c.st
	if s == nil {
		return Stats{}
	}
	st := s.snapshot()
	if p := c.pool.Load(); p != nil {
		for _, m := range p.members {
			if m.st != nil {
				st.add(m.st.snapshot())
			}
		}
	}
	st.InFlight, st.Subscriptions = uint64(c.inFlight()), uint64(c.liveSubs())
	return st
}

// snapshot reads the counters (not the gauges).
func (s *stats) snapshot() Stats {
	return Stats{
		Connects: s.Connects.Load(), ConnectErrors: s.ConnectErrors.Load(),
		ConnectionLost: s.ConnectionLost.Load(), PublishSent: s.PublishSent.Load(),
		PublishResent: s.PublishResent.Load(), PublishAcked: s.PublishAcked.Load(),
		PublishFailed: s.PublishFailed.Load(), Received: s.Received.Load(),
		Delivered: s.Delivered.Load(), Dropped: s.Dropped.Load(), Unrouted: s.Unrouted.Load(),
		AcksSent: s.AcksSent.Load(), PingTimeouts: s.PingTimeouts.Load(),
		ReceiveMaxExceeded: s.ReceiveMaxExceeded.Load(), ReadStalls: s.ReadStalls.Load(),
		Oversized:        s.Oversized.Load(),
		RedirectsRefused: s.RedirectsRefused.Load(), ServerDisconnects: s.ServerDisconnects.Load(),
		SubscribesSent: s.SubscribesSent.Load(), UnsubscribesSent: s.UnsubscribesSent.Load(),
		PoolPublishes: s.PoolPublishes.Load(), PoolFallbacks: s.PoolFallbacks.Load(),
	}
}

// add adds o's counters (not its gauges) to st.
func (st *Stats) add(o Stats) {
	st.Connects += o.Connects
	st.ConnectErrors += o.ConnectErrors
	st.ConnectionLost += o.ConnectionLost
	st.PublishSent += o.PublishSent
	st.PublishResent += o.PublishResent
	st.PublishAcked += o.PublishAcked
	st.PublishFailed += o.PublishFailed
	st.Received += o.Received
	st.Delivered += o.Delivered
	st.Dropped += o.Dropped
	st.Unrouted += o.Unrouted
	st.AcksSent += o.AcksSent
	st.PingTimeouts += o.PingTimeouts
	st.ReceiveMaxExceeded += o.ReceiveMaxExceeded
	st.RedirectsRefused += o.RedirectsRefused
	st.ReadStalls += o.ReadStalls
	st.Oversized += o.Oversized
	st.ServerDisconnects += o.ServerDisconnects
	st.SubscribesSent += o.SubscribesSent
	st.UnsubscribesSent += o.UnsubscribesSent
	st.PoolPublishes += o.PoolPublishes
	st.PoolFallbacks += o.PoolFallbacks
}

// inFlight counts the outbound QoS 1/2 publishes not completed, the pool's included.
func (c *Client) inFlight() int {
	c.mu.Lock()
	n := len(c.inflight)
	c.mu.Unlock()
	if p := c.pool.Load(); p != nil {
		for _, m := range p.members {
			n += m.inFlight()
		}
	}
	return n
}

func (c *Client) liveSubs() int {
	c.subMu.RLock()
	defer c.subMu.RUnlock()
	return len(c.subs)
}

// countRequest counts a SUBSCRIBE or UNSUBSCRIBE written.
func (c *Client) countRequest(p packet.Packet) {
	s := c.st
	if s == nil {
		return
	}
	if p.Type() == packet.SUBSCRIBE {
		s.SubscribesSent.Add(1)
	} else {
		s.UnsubscribesSent.Add(1)
	}
}
