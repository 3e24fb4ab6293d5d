package tern

import (
	"errors"
	"fmt"

	"github.com/ternmq/tern/packet"
)

// Sentinel errors. Each carries the package prefix; wrap with fmt.Errorf("...: %w") to add
// context and match with errors.Is.
var (
	// ErrNotConnected: the operation needs a live connection and there is none.
	ErrNotConnected = errors.New("tern: not connected")
	// ErrClosed: the client was disconnected by its owner and accepts no more work.
	ErrClosed = errors.New("tern: client closed")
	// ErrConnectionLost: the connection broke while the operation waited for its outcome.
	ErrConnectionLost = errors.New("tern: connection lost")
	// ErrInvalidOption: an option passed to New or Subscribe is out of range.
	ErrInvalidOption = errors.New("tern: invalid option")
	// ErrInvalidTopic: a topic name or filter breaks the protocol's rules.
	ErrInvalidTopic = errors.New("tern: invalid topic")
	// ErrInvalidMessage: a field of an outgoing message breaks the protocol's rules.
	ErrInvalidMessage = errors.New("tern: invalid message")
	// ErrQoSNotSupported: the broker's Maximum QoS is below the QoS asked for.
	ErrQoSNotSupported = errors.New("tern: QoS not supported by the broker")
	// ErrRetainNotSupported: the broker does not accept retained messages.
	ErrRetainNotSupported = errors.New("tern: retain not supported by the broker")
	// ErrPacketTooLarge: the packet exceeds the broker's Maximum Packet Size.
	ErrPacketTooLarge = errors.New("tern: packet exceeds the broker's maximum packet size")
	// ErrWildcardsNotSupported, ErrSharedNotSupported, ErrSubIDNotSupported: the broker said
	// in CONNACK that it does not accept that kind of subscription.
	ErrWildcardsNotSupported = errors.New("tern: wildcard subscriptions not supported by the broker")
	ErrSharedNotSupported    = errors.New("tern: shared subscriptions not supported by the broker")
	ErrSubIDNotSupported     = errors.New("tern: subscription identifiers not supported by the broker")
	// ErrWriteQueueFull: the write buffer is full and the overflow policy is to fail.
	ErrWriteQueueFull = errors.New("tern: write queue full")
	// ErrAlreadyConnected: Connect was called on a client that is already running.
	ErrAlreadyConnected = errors.New("tern: already connected")
	// ErrSessionLost: the broker lost the session and the policy is FailPending.
	ErrSessionLost = errors.New("tern: session lost by the broker")
	// ErrMessageExpired: the message's expiry interval passed before it could be sent.
	ErrMessageExpired = errors.New("tern: message expired before it was sent")
	// ErrInflightTTL: the message waited longer than WithInflightTTL for a connection.
	ErrInflightTTL = errors.New("tern: in-flight time limit exceeded")
)

// ReasonCodeError is an MQTT reason code of 0x80 or above returned by the broker: a refused
// CONNECT, PUBLISH, SUBSCRIBE or UNSUBSCRIBE, or a DISCONNECT. errors.Is matches it against
// a packet.ReasonCode value wrapped with AsError, and against the sentinels above where one
// fits (packet.QoSNotSupported matches ErrQoSNotSupported, for instance).
type ReasonCodeError struct {
	Op              string // "connect", "publish", "subscribe", "unsubscribe", "disconnect"
	Code            packet.ReasonCode
	Reason          string // the Reason String property, if the broker sent one
	UserProperties  []packet.UserProperty
	ServerReference string // CONNACK only: another server to use, with 0x9C or 0x9D
}

func (e *ReasonCodeError) Error() string {
	s := fmt.Sprintf("tern: %s refused: %s (0x%02x)", e.Op, e.Code, byte(e.Code))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Is lets errors.Is match a ReasonCodeError against the sentinel that means the same thing.
func (e *ReasonCodeError) Is(target error) bool {
	switch target {
	case ErrQoSNotSupported:
		return e.Code == packet.QoSNotSupported
	case ErrRetainNotSupported:
		return e.Code == packet.RetainNotSupported
	case ErrPacketTooLarge:
		return e.Code == packet.PacketTooLarge
	case ErrWildcardsNotSupported:
		return e.Code == packet.WildcardSubscriptionsNotSupported
	case ErrSharedNotSupported:
		return e.Code == packet.SharedSubscriptionsNotSupported
	case ErrSubIDNotSupported:
		return e.Code == packet.SubscriptionIdentifiersNotSupported
	}
	if t, ok := target.(*ReasonCodeError); ok {
		return t.Code == e.Code && (t.Op == "" || t.Op == e.Op)
	}
	return false
}

// DisconnectError reports a DISCONNECT sent by the broker.
type DisconnectError struct {
	Packet *packet.Disconnect
}

func (e *DisconnectError) Error() string {
	s := fmt.Sprintf("tern: disconnected by the broker: %s (0x%02x)", e.Packet.ReasonCode, byte(e.Packet.ReasonCode))
	if e.Packet.ReasonString != "" {
		s += ": " + e.Packet.ReasonString
	}
	return s
}

func invalidTopic(topic string, err error) error {
	return fmt.Errorf("%w %q: %w", ErrInvalidTopic, topic, err)
}

func invalidMessage(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrInvalidMessage, what, err)
}

// ErrUnsubscribed: the subscription was ended by Unsubscribe before the broker answered its
// SUBSCRIBE (Subscription.Wait).
var ErrUnsubscribed = errors.New("tern: unsubscribed")
