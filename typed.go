package tern

import (
	"context"
	"errors"
	"fmt"
)

// Codec turns values of type T into payloads and back. ContentType names the encoding; Typed
// puts it in the Content Type property of what it publishes. The codec/json package (here)
// and the msgpack module provide codecs; any type with these three methods will do.
//
// Encode and Decode may be called from several goroutines at once. Decode must not keep data
// after it returns: with SubZeroCopy, data points into a read buffer that is reused.
type Codec[T any] interface {
	Encode(v T) ([]byte, error)
	Decode(data []byte) (T, error)
	ContentType() string
}

// ErrDecode marks the error of a TypedMessage whose payload its codec could not decode. The
// codec's own error is wrapped too, so errors.As finds it.
var ErrDecode = errors.New("tern: decode payload")

// TypedMessage is a received message with its payload decoded. The embedded Message gives
// the topic, the properties and Ack; Value is the decoded payload, or the zero value when Err
// is set.
//
// A payload the codec cannot decode does not end the subscription: it arrives as a
// TypedMessage whose Err wraps ErrDecode and the codec's error, and it is acknowledged like
// any other message of the subscription (by the caller's Ack, by SubAutoAck, or when the
// callback returns).
type TypedMessage[T any] struct {
	*Message
	Value T
	Err   error
}

// Typed publishes values of type T and subscribes to them through a Codec. Make one with
// NewTyped (publishes go to a Client) or NewTypedQueued (publishes are stored in a
// QueuePublisher). It holds no state of its own beyond its two parts, costs one Encode per
// publish and one Decode per received message, and is safe for concurrent use.
type Typed[T any] struct {
	c     *Client
	qp    *QueuePublisher
	codec Codec[T]
}

// NewTyped returns a Typed that publishes through c with codec.
func NewTyped[T any](c *Client, codec Codec[T]) *Typed[T] {
	return &Typed[T]{c: c, codec: codec}
}

// NewTypedQueued returns a Typed whose Publish stores each message in p (durably, for a
// durable queue) instead of sending it at once; its subscribe forms use p's Client. QoS 0 is
// refused, as by QueuePublisher.Publish.
func NewTypedQueued[T any](p *QueuePublisher, codec Codec[T]) *Typed[T] {
	return &Typed[T]{c: p.c, qp: p, codec: codec}
}

// Publish encodes v as the payload of opts (any Payload in opts is replaced) and publishes
// it: through the Client as Client.Publish does (QoS 1 returns on PUBACK, QoS 2 on PUBCOMP),
// or into the QueuePublisher. The Content Type property is the codec's unless opts sets one;
// on a client that speaks MQTT 3.1.1, which has no properties, it is left out (also under
// MQTT5Fallback311 until an MQTT 5 connection has succeeded), while a Content Type set in
// opts is refused there with ErrNotInV311 as by Client.Publish. An encoding failure is
// returned before anything is sent.
func (t *Typed[T]) Publish(ctx context.Context, opts PublishOptions, v T) error {
	b, err := t.codec.Encode(v)
	if err != nil {
		return fmt.Errorf("tern: encode payload: %w", err)
	}
	opts.Payload = b
	if opts.ContentType == "" && !t.c.mayFallBack311() {
		opts.ContentType = t.codec.ContentType()
	}
	if t.qp != nil {
		return t.qp.Publish(ctx, opts)
	}
	return t.c.Publish(ctx, opts)
}

// wrap decodes m's payload.
func (t *Typed[T]) wrap(m *Message) *TypedMessage[T] {
	tm := &TypedMessage[T]{Message: m}
	v, err := t.codec.Decode(m.Payload)
	if err != nil {
		tm.Err = fmt.Errorf("%w on %q: %w", ErrDecode, m.Topic, err)
		return tm
	}
	tm.Value = v
	return tm
}

// Subscribe is Client.Subscribe with decoded messages. The subscription's buffer and drop
// policy apply to messages before they are decoded; a goroutine of the subscription decodes
// each one as the receiver takes it from the channel (which is unbuffered). Unless SubAutoAck
// is given, every message, undecodable ones included, must be acknowledged with Ack.
//
// The channel is closed when the subscription ends. Messages still buffered then go to a
// receiver already waiting on the channel; the rest are acknowledged and dropped, as the
// client does with any message that reaches an ended subscription.
func (t *Typed[T]) Subscribe(ctx context.Context, filters []TopicFilter, opts ...SubOption) (<-chan *TypedMessage[T], *Subscription, error) {
	s, err := t.c.newSubscription(filters, opts)
	if err != nil {
		return nil, nil, err
	}
	s.q = newQueue(s.cfg.buffer, s.cfg.policy, s.droppedByQueue)
	out := make(chan *TypedMessage[T])
	go t.forward(s.q, s.quit, out)
	live, err := t.c.subscribe(ctx, s)
	if live == nil {
		return nil, nil, err
	}
	return out, live, err
}

// forward decodes the messages of q into out until q is closed and drained. Once quit is
// closed (the subscription ended) it stops waiting for the receiver.
func (t *Typed[T]) forward(q *Queue[*Message], quit <-chan struct{}, out chan<- *TypedMessage[T]) {
	defer close(out)
	for {
		m, ok := q.Pop(context.Background())
		if !ok {
			return
		}
		tm := t.wrap(m)
		select {
		case out <- tm:
			continue
		case <-quit:
		}
		select {
		case out <- tm:
		default:
			m.Ack()
		}
	}
}

// SubscribeQueue is Client.SubscribeQueue with decoded messages: the TypedQueue's Pop and
// TryPop decode as they remove a message, so nothing runs between the buffer and the
// consumer. Unless SubAutoAck is given, every message must be acknowledged with Ack.
func (t *Typed[T]) SubscribeQueue(ctx context.Context, filters []TopicFilter, opts ...SubOption) (*TypedQueue[T], *Subscription, error) {
	q, s, err := t.c.SubscribeQueue(ctx, filters, opts...)
	if s == nil {
		return nil, nil, err
	}
	return &TypedQueue[T]{q: q, t: t}, s, err
}

// SubscribeCallback is Client.SubscribeCallback with decoded messages: fn is called with each
// one, on the subscription's goroutine, one at a time in arrival order. The message is
// acknowledged when fn returns unless SubManualAck is given, whether it decoded or not.
func (t *Typed[T]) SubscribeCallback(ctx context.Context, filters []TopicFilter, fn func(*TypedMessage[T]), opts ...SubOption) (*Subscription, error) {
	if fn == nil {
		return nil, fmt.Errorf("%w: nil callback", ErrInvalidOption)
	}
	return t.c.SubscribeCallback(ctx, filters, func(m *Message) { fn(t.wrap(m)) }, opts...)
}

// TypedQueue is the buffer of a typed queue subscription (Typed.SubscribeQueue). It is a
// Queue of received messages that decodes each one as it is removed. Safe for concurrent use
// by several consumers.
type TypedQueue[T any] struct {
	q *Queue[*Message]
	t *Typed[T]
}

// Pop removes the oldest message and decodes it, waiting for one until ctx ends. ok is false
// when the subscription ended and the queue is empty, or ctx ended.
func (q *TypedQueue[T]) Pop(ctx context.Context) (*TypedMessage[T], bool) {
	m, ok := q.q.Pop(ctx)
	if !ok {
		return nil, false
	}
	return q.t.wrap(m), true
}

// TryPop is Pop without waiting.
func (q *TypedQueue[T]) TryPop() (*TypedMessage[T], bool) {
	m, ok := q.q.TryPop()
	if !ok {
		return nil, false
	}
	return q.t.wrap(m), true
}

// Len returns the number of buffered messages.
func (q *TypedQueue[T]) Len() int { return q.q.Len() }

// Cap returns the buffer size.
func (q *TypedQueue[T]) Cap() int { return q.q.Cap() }
