package tern

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/ternmq/tern/packet"
)

// readLoop reads and dispatches packets until the connection fails. A packet that breaks the
// protocol closes the connection with DISCONNECT and the reason code the specification names;
// nothing from the network can make it panic.
func (cn *conn) readLoop() {
	pub := packet.Publish{Version: cn.ver} // reused: decoding into it does not allocate
	defer cn.endBatch(false)
	for {
		f, err := cn.r.ReadFrame()
		if err != nil {
			if ok, err := cn.skipOversized(err); !ok {
				cn.readFailed(err)
				return
			}
			continue
		}
		cn.reads.Add(1)
		// A batch lasts while the next packet is already in memory: its wake-ups and
		// acknowledgements wait for its end, never for the network. A batch of one packet
		// is corked too, so that its acknowledgement leaves from here (endBatch).
		more := cn.r.FrameBuffered()
		if !cn.corked {
			cn.corked = true
			cn.w.cork()
		}
		err = cn.dispatch(&f, &pub)
		if !more {
			cn.endBatch(true)
		}
		if err != nil {
			f.Release()
			if bye := cn.bye.Load(); bye != nil {
				cn.close(*bye) // a graceful Disconnect is under way: its writer is closed
				return
			}
			// A packet error carries the code the specification names; anything else (a
			// store failure, say) is our own problem.
			code := packet.ImplementationSpecificError
			if perr := (*packet.Error)(nil); errors.As(err, &perr) {
				code = perr.Code
			}
			cn.c.log.Warn("tern: closing the connection", "err", err)
			cn.closeWith(code, fmt.Errorf("%w: %w", ErrConnectionLost, err))
			return
		}
		select {
		case <-cn.closing:
			return
		default:
		}
	}
}

// endBatch ends a read batch: it wakes the consumers of the queues the batch filled, once
// each, and lets the acknowledgements the batch caused leave in one write. The read loop
// calls it when no whole packet is buffered (before it may block on the network) and before
// any wait for a consumer. With inline set (the read loop holds no lock) that write is made
// here when the writer is idle, with one system call that never waits (writer.uncork): the
// read loop cannot block on a peer that has stopped reading, so it never deadlocks with a
// broker that is itself blocked writing to us. Reader only.
func (cn *conn) endBatch(inline bool) {
	for i, q := range cn.wakeLater {
		q.wake()
		cn.wakeLater[i] = nil
	}
	cn.wakeLater = cn.wakeLater[:0]
	if cn.corked {
		cn.corked = false
		cn.w.uncork(inline)
	}
}

func (cn *conn) readFailed(err error) {
	if bye := cn.bye.Load(); bye != nil {
		cn.close(*bye) // the end of a graceful Disconnect, not a lost connection
		return
	}
	var perr *packet.Error
	if errors.As(err, &perr) {
		cn.closeWith(perr.Code, fmt.Errorf("%w: %w", ErrConnectionLost, err))
		return
	}
	select {
	case <-cn.closing:
		return // closed on purpose; keep the first reason
	default:
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = io.ErrUnexpectedEOF
	}
	cn.close(fmt.Errorf("%w: %w", ErrConnectionLost, err))
}

var (
	errUnexpectedPacket = &packet.Error{Code: packet.ProtocolError, Detail: "packet a server must not send"}
	errAuth311          = &packet.Error{Code: packet.MalformedPacket, Detail: "reserved packet type 15 (MQTT 3.1.1)"}
)

// dispatch handles one frame. It takes ownership of the frame on success.
func (cn *conn) dispatch(f *packet.Frame, pub *packet.Publish) error {
	c := cn.c
	switch t := f.Type(); t {
	case packet.PUBLISH:
		if err := pub.Decode(f.Flags(), f.Body); err != nil {
			return err
		}
		return c.handlePublish(cn, f, pub)
	case packet.PUBACK, packet.PUBREC, packet.PUBCOMP, packet.PUBREL:
		a := packet.Ack{Version: cn.ver}
		err := a.Decode(t, f.Flags(), f.Body)
		f.Release()
		if err != nil {
			return err
		}
		if t == packet.PUBREL {
			return c.handlePubrel(cn, &a)
		}
		return c.handleAck(cn, &a)
	case packet.SUBACK:
		s := packet.Suback{Version: cn.ver}
		err := s.Decode(f.Flags(), f.Body)
		f.Release()
		if err != nil {
			return err
		}
		return c.handleSuback(&s)
	case packet.UNSUBACK:
		u := packet.Unsuback{Version: cn.ver}
		err := u.Decode(f.Flags(), f.Body)
		f.Release()
		if err != nil {
			return err
		}
		return c.handleUnsuback(&u)
	case packet.PINGRESP:
		if f.Flags() != 0 || len(f.Body) != 0 {
			return &packet.Error{Code: packet.MalformedPacket, Detail: "PINGRESP with flags or a body"}
		}
		f.Release()
		cn.pingSent.Store(0)
		return nil
	case packet.DISCONNECT:
		d := packet.Disconnect{Version: cn.ver}
		err := d.Decode(f.Flags(), f.Body)
		f.Release()
		if err != nil {
			return err
		}
		c.handleServerDisconnect(cn, &d)
		return nil
	case packet.AUTH:
		if cn.ver == packet.Version311 {
			f.Release()
			return errAuth311
		}
		var a packet.Auth
		err := a.Decode(f.Flags(), f.Body)
		f.Release()
		if err != nil {
			return err
		}
		return cn.handleAuth(&a)
	default:
		f.Release()
		return errUnexpectedPacket
	}
}

func (c *Client) handleServerDisconnect(cn *conn, d *packet.Disconnect) {
	c.log.Info("tern: broker sent DISCONNECT", "reason", d.ReasonCode.String(), "reason_string", d.ReasonString)
	c.noteRedirect(cn, d)
	if s := c.st; s != nil {
		s.ServerDisconnects.Add(1)
	}
	if fn := c.cfg.onServerDisc; fn != nil {
		c.events.post(func() { fn(d) })
	}
	cn.close(&DisconnectError{Packet: d})
}
