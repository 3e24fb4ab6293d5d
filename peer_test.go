package tern

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// peer is a scripted in-process MQTT server for protocol edge cases a real broker will not
// produce on demand. Each accepted connection is handed to the test, which reads and writes
// packets explicitly.
type peer struct {
	t     *testing.T
	ln    net.Listener
	conns chan *peerConn
	done  chan struct{}
}

type peerConn struct {
	t  *testing.T
	nc net.Conn
	r  *packet.Reader
}

func newPeer(t *testing.T) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return servePeer(t, ln)
}

// servePeer runs a peer on ln, a TLS listener for instance; it closes ln at cleanup.
func servePeer(t *testing.T, ln net.Listener) *peer {
	p := &peer{t: t, ln: ln, conns: make(chan *peerConn, 16), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				close(p.conns)
				return
			}
			pc := &peerConn{t: t, nc: nc, r: packet.NewReader(nc, 4096)}
			t.Cleanup(func() { nc.Close() })
			p.conns <- pc
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-p.done
	})
	return p
}

func (p *peer) url() string { return "mqtt://" + p.ln.Addr().String() }

// accept waits for the next connection.
func (p *peer) accept() *peerConn {
	p.t.Helper()
	select {
	case pc := <-p.conns:
		return pc
	case <-time.After(10 * time.Second):
		p.t.Fatal("peer: no connection within 10s")
	}
	return nil
}

// handshake accepts a connection, reads CONNECT and answers with ca.
func (p *peer) handshake(ca *packet.Connack) (*peerConn, *packet.Connect) {
	p.t.Helper()
	pc := p.accept()
	cp, ok := pc.read().(*packet.Connect)
	if !ok {
		p.t.Fatal("peer: first packet is not CONNECT")
	}
	pc.send(ca)
	return pc, cp
}

// read returns the next packet, failing the test after 10 s.
func (pc *peerConn) read() packet.Packet {
	pc.t.Helper()
	pkt, err := pc.tryRead(10 * time.Second)
	if err != nil {
		pc.t.Fatalf("peer: read: %v", err)
	}
	return pkt
}

func (pc *peerConn) tryRead(d time.Duration) (packet.Packet, error) {
	pc.nc.SetReadDeadline(time.Now().Add(d))
	f, err := pc.r.ReadFrame()
	if err != nil {
		return nil, err
	}
	pkt, err := packet.Decode(&f)
	if err != nil {
		return nil, err
	}
	if pub, ok := pkt.(*packet.Publish); ok {
		pkt = pub.Clone()
	}
	f.Release()
	return pkt, nil
}

// quiet reports whether nothing arrives within d. Used only to check that something does
// NOT happen; it cannot make a correct client fail.
func (pc *peerConn) quiet(d time.Duration) bool {
	pkt, err := pc.tryRead(d)
	if err == nil {
		pc.t.Logf("peer: unexpected %T %+v", pkt, pkt)
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (pc *peerConn) send(p packet.Packet) {
	pc.t.Helper()
	pc.sendRaw(p.AppendTo(nil))
}

func (pc *peerConn) sendRaw(b []byte) {
	pc.t.Helper()
	if _, err := pc.nc.Write(b); err != nil {
		pc.t.Fatalf("peer: write: %v", err)
	}
}

// expectDisconnect reads until DISCONNECT and returns its reason code; then it expects the
// client to close the connection.
func (pc *peerConn) expectDisconnect() packet.ReasonCode {
	pc.t.Helper()
	for {
		pkt := pc.read()
		if d, ok := pkt.(*packet.Disconnect); ok {
			if _, err := pc.tryRead(10 * time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				var ne net.Error
				if !errors.As(err, &ne) || ne.Timeout() {
					pc.t.Fatalf("peer: connection not closed after DISCONNECT: %v", err)
				}
			}
			return d.ReasonCode
		}
	}
}

// connectPeer starts a client against p, completes the handshake with ca, and returns both.
func connectPeer(t *testing.T, p *peer, ca *packet.Connack, opts ...Option) (*Client, *peerConn, *packet.Connect) {
	t.Helper()
	c, err := New(append([]Option{WithBroker(p.url()), WithStats(),
		WithReconnectBackoff(ConstantBackoff(time.Hour))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	pc, cp := startAtPeer(t, p, c, ca)
	pc.closeOnEOF()
	return c, pc, cp
}

// startAtPeer connects c to p, completing the handshake with ca, and disconnects c when the
// test ends.
func startAtPeer(t *testing.T, p *peer, c *Client, ca *packet.Connack) (*peerConn, *packet.Connect) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc, cp := p.handshake(ca)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return pc, cp
}

// closeOnEOF makes the peer act as a broker does once the test is over: it reads and
// discards what the client sends and closes when the client ends its side, so the client's
// Disconnect (registered as a cleanup before this one, so it runs after) does not wait for
// the peer to close.
func (pc *peerConn) closeOnEOF() {
	pc.t.Cleanup(func() {
		go func() {
			pc.nc.SetReadDeadline(time.Time{})
			_, _ = io.Copy(io.Discard, pc.nc)
			pc.nc.Close()
		}()
	})
}
