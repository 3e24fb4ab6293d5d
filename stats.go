package tern

import "sync/atomic"

// Stats is a snapshot of a client's counters since New. All zero unless WithStats is given.
type Stats struct {
	Connects       uint64 // successful CONNECT/CONNACK exchanges
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
	// ReadStalls counts deliveries that stopped the read loop until a consumer made room:
	// QoS 0 messages, or QoS 1/2 past the hold cap, into a full Block subscription.
	ReadStalls uint64
}

// stats holds the live counters. The client keeps a nil *stats when counting is off, so each
// counting site costs one predictable branch.
type stats struct {
	Connects, ConnectErrors, ConnectionLost                 atomic.Uint64
	PublishSent, PublishResent, PublishAcked, PublishFailed atomic.Uint64
	Received, Delivered, Dropped, Unrouted, AcksSent        atomic.Uint64
	PingTimeouts, ReceiveMaxExceeded, ReadStalls            atomic.Uint64
	RedirectsRefused                                        atomic.Uint64
}

// Stats returns the current counters. It is safe to call from any goroutine.
func (c *Client) Stats() Stats {
	s := c.st
	if s == nil {
		return Stats{}
	}
	return Stats{
		Connects: s.Connects.Load(), ConnectErrors: s.ConnectErrors.Load(),
		ConnectionLost: s.ConnectionLost.Load(), PublishSent: s.PublishSent.Load(),
		PublishResent: s.PublishResent.Load(), PublishAcked: s.PublishAcked.Load(),
		PublishFailed: s.PublishFailed.Load(), Received: s.Received.Load(),
		Delivered: s.Delivered.Load(), Dropped: s.Dropped.Load(), Unrouted: s.Unrouted.Load(),
		AcksSent: s.AcksSent.Load(), PingTimeouts: s.PingTimeouts.Load(),
		ReceiveMaxExceeded: s.ReceiveMaxExceeded.Load(), ReadStalls: s.ReadStalls.Load(),
		RedirectsRefused: s.RedirectsRefused.Load(),
	}
}
