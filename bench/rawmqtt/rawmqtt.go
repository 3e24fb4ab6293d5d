// Package rawmqtt is the neutral load of the side-by-side benchmarks: a minimal MQTT 5 client
// on a plain TCP connection, built on tern's packet codec, that writes pre-encoded packets in
// large batches and allocates nothing per message.
//
// It is the "raw" row of the tables (the physical limit a client can reach through the
// broker), the sink that checks what the libraries publish, and the feeder that loads the
// broker when the libraries subscribe. It implements only what those jobs need: no
// keepalive, no reconnect, no session resume, one publishing goroutine at a time.
package rawmqtt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packet"
)

// Options configure a connection.
type Options struct {
	ClientID   string
	ReceiveMax uint16 // advertised in CONNECT; 0 leaves it absent (65535)
	// AckEach makes the read loop write each acknowledgement it owes (PUBACK, PUBREC,
	// PUBREL, PUBCOMP) at once, one write(2) per packet, as a client that acknowledges
	// every message as it reads it does. Default false: the acknowledgements of a read
	// batch go out in one write when the read buffer runs dry, far cheaper per message.
	AckEach bool
}

// Handler receives each PUBLISH on the read goroutine. The packet, its topic and payload are
// valid only during the call.
type Handler func(p *packet.Publish)

// Client is one raw MQTT 5 connection.
type Client struct {
	nc    net.Conn
	r     *packet.Reader
	quota int32 // the broker's Receive Maximum

	wmu sync.Mutex // serialises writes: the publisher and the reader's acks

	onMsg    atomic.Pointer[Handler]
	inflight atomic.Int32
	wake     chan struct{} // cap 1: an acknowledgement freed a place
	suback   chan error    // one per SUBSCRIBE
	done     chan struct{} // closed when the read loop ends
	err      error         // why the read loop ended, valid after done
	maxOwed  atomic.Int32  // most QoS 1/2 messages received and not yet acknowledged at once
	ackEach  bool
	ackW     atomic.Int64 // acknowledgement writes the read loop has made

	// Publisher state, owned by the one publishing goroutine.
	nextID uint16
	batch  []byte
}

// Dial connects to addr, sends CONNECT (Clean Start, keepalive off) and waits for CONNACK.
func Dial(ctx context.Context, addr string, o Options) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	cp := packet.Connect{ClientID: o.ClientID, CleanStart: true, ReceiveMaximum: o.ReceiveMax}
	if _, err := nc.Write(cp.AppendTo(nil)); err != nil {
		nc.Close()
		return nil, fmt.Errorf("rawmqtt: write CONNECT: %w", err)
	}
	r := packet.NewReader(nc, 256<<10)
	f, err := r.ReadFrame()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("rawmqtt: read CONNACK: %w", err)
	}
	var ca packet.Connack
	if f.Type() != packet.CONNACK {
		err = fmt.Errorf("rawmqtt: got %v instead of CONNACK", f.Type())
	} else if err = ca.Decode(f.Flags(), f.Body); err == nil && ca.ReasonCode.IsError() {
		err = fmt.Errorf("rawmqtt: CONNACK refused: %v", ca.ReasonCode)
	}
	f.Release()
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c := &Client{
		nc: nc, r: r, quota: int32(ca.ReceiveMax()), ackEach: o.AckEach,
		wake: make(chan struct{}, 1), suback: make(chan error, 1), done: make(chan struct{}),
		batch: make([]byte, 0, 256<<10),
	}
	go c.readLoop()
	return c, nil
}

// SendQuota returns the broker's Receive Maximum.
func (c *Client) SendQuota() int { return int(c.quota) }

// OnMessage sets the handler for received messages. Set it before subscribing.
func (c *Client) OnMessage(h Handler) { c.onMsg.Store(&h) }

// Subscribe subscribes to filter at qos and waits for SUBACK.
func (c *Client) Subscribe(ctx context.Context, filter string, qos byte) error {
	s := packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}}
	if err := c.write(s.AppendTo(nil)); err != nil {
		return err
	}
	select {
	case err := <-c.suback:
		return err
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close sends DISCONNECT and closes the connection.
func (c *Client) Close() error {
	d := packet.Disconnect{}
	c.write(d.AppendTo(nil))
	err := c.nc.Close()
	<-c.done
	return err
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, once Done is closed.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *Client) write(b []byte) error {
	c.wmu.Lock()
	_, err := c.nc.Write(b)
	c.wmu.Unlock()
	return err
}

var errClosed = errors.New("rawmqtt: connection closed")

// readLoop dispatches incoming packets. Acknowledgements it owes are collected and written
// in one go whenever the read buffer runs dry, so a burst of messages costs one write; with
// Options.AckEach each is written as soon as it is owed.
func (c *Client) readLoop() {
	defer close(c.done)
	var pub packet.Publish
	var ack packet.Ack
	acks := make([]byte, 0, 4096)
	// owed counts received QoS 1/2 messages whose final acknowledgement (PUBACK, PUBCOMP)
	// is not written yet, pending the messages whose acknowledgement sits in acks.
	owed, pending := int32(0), int32(0)
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			c.err = err
			if errors.Is(err, net.ErrClosed) {
				c.err = errClosed
			}
			return
		}
		switch f.Type() {
		case packet.PUBLISH:
			if err := pub.Decode(f.Flags(), f.Body); err != nil {
				f.Release()
				c.err = err
				c.nc.Close()
				return
			}
			if h := c.onMsg.Load(); h != nil {
				(*h)(&pub)
			}
			switch pub.QoS {
			case 1:
				acks = appendAck(acks, packet.PUBACK, pub.PacketID)
				pending++
			case 2:
				acks = appendAck(acks, packet.PUBREC, pub.PacketID)
			}
			if pub.QoS > 0 {
				if owed++; owed > c.maxOwed.Load() {
					c.maxOwed.Store(owed)
				}
			}
		case packet.PUBACK, packet.PUBCOMP:
			c.inflight.Add(-1)
			signal(c.wake)
		case packet.PUBREC:
			if err := ack.Decode(packet.PUBREC, f.Flags(), f.Body); err == nil {
				acks = appendAck(acks, packet.PUBREL, ack.PacketID)
			}
		case packet.PUBREL:
			if err := ack.Decode(packet.PUBREL, f.Flags(), f.Body); err == nil {
				acks = appendAck(acks, packet.PUBCOMP, ack.PacketID)
				pending++
			}
		case packet.SUBACK:
			var sa packet.Suback
			err := sa.Decode(f.Flags(), f.Body)
			if err == nil && (len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0].IsError()) {
				err = fmt.Errorf("rawmqtt: subscription refused: %v", sa.ReasonCodes)
			}
			c.suback <- err
		case packet.DISCONNECT:
			var d packet.Disconnect
			d.Decode(f.Flags(), f.Body)
			f.Release()
			c.err = fmt.Errorf("rawmqtt: broker sent DISCONNECT %v", d.ReasonCode)
			c.nc.Close()
			return
		}
		f.Release()
		if len(acks) > 0 && (c.ackEach || c.r.Buffered() == 0 || len(acks) >= 4000) {
			c.ackW.Add(1)
			if err := c.write(acks); err != nil {
				c.err = err
				return
			}
			acks = acks[:0]
			owed -= pending
			pending = 0
		}
	}
}

// MaxUnacked returns the most QoS 1/2 messages the broker had sent this client without an
// acknowledgement written back, at any moment: with a well-behaved broker, never above the
// Receive Maximum advertised in CONNECT.
func (c *Client) MaxUnacked() int { return int(c.maxOwed.Load()) }

// AckWrites returns how many writes of acknowledgements the read loop has made (counted
// as it starts each one): with Options.AckEach one per acknowledgement.
func (c *Client) AckWrites() int64 { return c.ackW.Load() }

// appendAck appends a four-byte acknowledgement of the given kind.
func appendAck(dst []byte, kind packet.Type, id uint16) []byte {
	a := packet.Ack{Kind: kind, PacketID: id}
	return a.AppendTo(dst)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Template is a PUBLISH encoded once and patched for each message: its packet identifier and
// its payload's stamp.
type Template struct {
	b          []byte
	idOff      int // offset of the packet identifier; -1 for QoS 0
	payloadOff int
}

// NewTemplate encodes a PUBLISH of payload to topic at qos.
func NewTemplate(topic string, qos byte, payload []byte) *Template {
	p := packet.Publish{Topic: topic, QoS: qos, Payload: payload}
	if qos > 0 {
		p.PacketID = 1
	}
	b := p.AppendTo(nil)
	t := &Template{b: b, idOff: -1, payloadOff: len(b) - len(payload)}
	if qos > 0 {
		t.idOff = t.payloadOff - 1 - 2 // property length (0) and the identifier before it
	}
	return t
}

// Publish sends n messages built from t as fast as the broker's window allows and returns
// once every QoS 1/2 message is acknowledged. stamp(i, payload) prepares message i in place.
// Messages are written in batches of up to 64 KiB (at least one message), one write each.
// Only one goroutine may publish at a time.
func (c *Client) Publish(ctx context.Context, t *Template, n int, stamp func(i int, payload []byte)) error {
	qos := t.idOff >= 0
	for i := 0; i < n; {
		room := n - i
		if qos {
			free := int(c.quota - c.inflight.Load())
			for free <= 0 {
				if err := c.awaitAck(ctx); err != nil {
					return err
				}
				free = int(c.quota - c.inflight.Load())
			}
			room = min(room, free)
		}
		b := c.batch[:0]
		k := 0
		for ; k < room && (k == 0 || len(b)+len(t.b) <= cap(c.batch)); k++ {
			start := len(b)
			b = append(b, t.b...)
			if qos {
				c.nextID++
				if c.nextID == 0 {
					c.nextID = 1
				}
				b[start+t.idOff], b[start+t.idOff+1] = byte(c.nextID>>8), byte(c.nextID)
			}
			stamp(i+k, b[start+t.payloadOff:start+len(t.b)])
		}
		if qos {
			c.inflight.Add(int32(k))
		}
		if err := c.write(b); err != nil {
			return err
		}
		if cap(b) > cap(c.batch) {
			c.batch = b[:0]
		}
		i += k
	}
	return c.WaitAcked(ctx)
}

// WaitAcked waits until no QoS 1/2 message of this client awaits acknowledgement.
func (c *Client) WaitAcked(ctx context.Context) error {
	for c.inflight.Load() > 0 {
		if err := c.awaitAck(ctx); err != nil {
			return err
		}
	}
	return nil
}

// awaitAck waits until an acknowledgement frees a place; it returns the connection's error
// if the connection ends first, or ctx's.
func (c *Client) awaitAck(ctx context.Context) error {
	select {
	case <-c.wake:
		return nil
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
