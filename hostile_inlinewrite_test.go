//go:build linux

package tern

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

// smallBuffers makes a socket's kernel buffers small (the kernel doubles and rounds up), so
// a peer that stops reading fills the path between it and the client with little data.
func smallBuffers(opt int) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4096)
		})
		return errors.Join(err, serr)
	}
}

// TestHostileBrokerStopsReadingInlineWrites: a broker that never reads what the client sends
// while it floods the client with QoS 1 PUBLISHes, each of which makes the client owe a
// PUBACK. The read loop writes its acknowledgements itself, but only with non-blocking
// writes: once the socket is full the rest goes to the writer goroutine (which blocks), and
// the read loop keeps reading. Promises defended: the read loop never deadlocks with a broker
// that is itself blocked writing to us (every PUBLISH the broker writes is read), Publish
// honours its ctx while the socket is full (QoS 0 waiting for room, QoS 1 written inline
// then waiting for PUBACK), and once the broker goes away the client fails over to the next
// broker of its list, where the message left in flight is published again and arrives.
func TestHostileBrokerStopsReadingInlineWrites(t *testing.T) {
	lc := net.ListenConfig{Control: smallBuffers(syscall.SO_RCVBUF)}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := servePeer(t, ln)
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := faultCtx(t, 60*time.Second)

	life := newLifecycle()
	c, err := New(append(life.options(), WithBroker(p.url()), WithStats(), fastReconnect(),
		WithWriteBuffer(256<<10),
		WithDialer(&net.Dialer{Control: smallBuffers(syscall.SO_SNDBUF)}))...)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	msgs, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "flood", QoS: 1}}, SubAutoAck(),
		SubBuffer(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(ctx) }()
	pc, _ := p.handshake(&packet.Connack{})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	life.waitUp(t, 10*time.Second, "connection to the hostile broker")
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(dctx)
	})
	sp, ok := pc.read().(*packet.Subscribe)
	if !ok {
		t.Fatal("peer: expected SUBSCRIBE")
	}
	pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{1}})
	// From here on the broker reads nothing.

	// 1. The flood: 40,000 PUBLISHes (about 400 KiB) owe 160 KiB of PUBACKs, far more than
	// the two small socket buffers hold, and under the urgent bound (1 MiB). Every write of
	// the broker must complete: the client keeps reading.
	const n = 40000
	flooded := make(chan error, 1)
	go func() {
		var buf []byte
		for i := range n {
			id := uint16(i%65535 + 1)
			buf = (&packet.Publish{Topic: "flood", QoS: 1, PacketID: id, Payload: []byte{byte(i)}}).AppendTo(buf)
			if len(buf) > 16<<10 || i == n-1 {
				pc.nc.SetWriteDeadline(time.Now().Add(20 * time.Second))
				if _, err := pc.nc.Write(buf); err != nil {
					flooded <- err
					return
				}
				buf = buf[:0]
			}
		}
		flooded <- nil
	}()
	deadline := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case m := <-msgs:
			got = append(got, m.Payload)
		case <-deadline:
			t.Fatalf("the client read %d of %d PUBLISHes: the read loop is stuck", len(got), n)
		}
	}
	if err := <-flooded; err != nil {
		t.Fatalf("broker's writes: %v", err)
	}
	c.mu.Lock()
	w := c.conn.w
	c.mu.Unlock()
	if w.inlineWrites.Load() == 0 || w.handovers.Load() == 0 {
		t.Fatalf("inline writes %d, hand-overs %d: the test did not fill the socket from the read loop",
			w.inlineWrites.Load(), w.handovers.Load())
	}

	// 2. Publishing into the full socket honours ctx: QoS 0 waits for room in the write
	// buffer, QoS 1 is written inline (the writer is busy: left to it) and waits for PUBACK.
	big := make([]byte, 64<<10)
	pubErr := func(qos byte) error {
		for {
			pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			start := time.Now()
			err := c.Publish(pctx, PublishOptions{Topic: "stuck", QoS: qos, Payload: big})
			cancel()
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("QoS %d publish took %v with a 200ms ctx", qos, took)
			}
			if err != nil || qos > 0 {
				return err
			}
		}
	}
	if err := pubErr(0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("QoS 0 publish into a full socket: %v, want the ctx's deadline", err)
	}
	if err := pubErr(1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("QoS 1 publish into a full socket: %v, want the ctx's deadline", err)
	}

	// 3. The broker goes away: the client fails over to Mosquitto (the failover list now
	// names it alone, so the test knows where it goes), where the QoS 1 message
	// still in flight is published again (a new session) and a new one goes through.
	if err := c.SetBrokers(b.URL); err != nil {
		t.Fatal(err)
	}
	pc.nc.Close()
	life.waitDown(t, 10*time.Second, "after the hostile broker closed")
	info := life.waitUp(t, 10*time.Second, "failover")
	if info.Broker != b.URL {
		t.Fatalf("connected to %s, want %s", info.Broker, b.URL)
	}
	if err := c.Publish(ctx, PublishOptions{Topic: "after", QoS: 1, Payload: []byte("ok")}); err != nil {
		t.Fatalf("publish after failover: %v", err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
