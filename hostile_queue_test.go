package tern

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// Hostile-broker scenarios for the QueuePublisher's give-up policy. Each test names the
// promise it defends.

const hostileBacklog = 1000

// fillQueue stores n messages, before any publisher runs. Each payload starts with the
// message's number and is 32 bytes long, so no PUBLISH fits in 20 bytes.
func fillQueue(t *testing.T, q PublisherQueue, n int) {
	t.Helper()
	for i := range n {
		if err := q.Enqueue(context.Background(), &QueueEntry{Message: PublishOptions{
			Topic: "hq", QoS: 1, Payload: append(seqPayload(i), make([]byte, 24)...)}}); err != nil {
			t.Fatal(err)
		}
	}
}

// ackAll acknowledges every PUBLISH the peer reads until want distinct payloads arrived.
func ackAll(t *testing.T, pc *peerConn, want int) {
	t.Helper()
	seen := make(map[uint64]bool)
	for len(seen) < want {
		pub := readPublish(t, pc)
		seen[binary.BigEndian.Uint64(pub.Payload)] = true
		pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
	}
}

// refuseUntilQuiet refuses every PUBLISH with code until the client stays quiet for 50 ms
// (the backoff's shortest delay is longer), and returns how many it refused.
func refuseUntilQuiet(t *testing.T, pc *peerConn, code packet.ReasonCode) int {
	t.Helper()
	n := 0
	for {
		wait := 50 * time.Millisecond
		if n == 0 {
			wait = 10 * time.Second // the first PUBLISH, however slow the machine
		}
		pkt, err := pc.tryRead(wait)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return n
		}
		if err != nil {
			t.Fatalf("peer read: %v", err)
		}
		pub, ok := pkt.(*packet.Publish)
		if !ok {
			continue
		}
		n++
		if n > hostileBacklog {
			t.Fatalf("more than %d PUBLISH attempts without a pause: a retry storm", hostileBacklog)
		}
		pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID, ReasonCode: code})
	}
}

// A message leaves the durable queue only when delivered, expired or given up by a policy
// the user set: with default options, refusals keep every message, back off instead of
// storming, and everything is delivered once the broker accepts again.
func TestHostileQueuePubackRefusalsKeepMessages(t *testing.T) {
	for _, code := range []packet.ReasonCode{packet.UnspecifiedError, packet.QuotaExceeded,
		packet.NotAuthorized, packet.ServerBusy, packet.PacketTooLarge} {
		t.Run(fmt.Sprintf("0x%02x", byte(code)), func(t *testing.T) {
			p := newPeer(t)
			c, pc, _ := connectPeer(t, p, &packet.Connack{ReceiveMaximum: 10})
			q := NewMemoryQueue()
			fillQueue(t, q, hostileBacklog)
			qp, err := NewQueuePublisher(c, q)
			if err != nil {
				t.Fatal(err)
			}
			closePublisher(t, qp)
			refused := refuseUntilQuiet(t, pc, code)
			// The last refusal may still be on its way through the client.
			waitFor(t, func() bool { return qp.Stats().LastError != nil })
			st := qp.Stats()
			var rc *ReasonCodeError
			if !errors.As(st.LastError, &rc) || rc.Code != code {
				t.Fatalf("LastError %v, want the refusal 0x%02x", st.LastError, byte(code))
			}
			if st.Depth != hostileBacklog || st.DeadLettered != 0 {
				t.Fatalf("after %d refusals: %+v; want all %d kept", refused, st, hostileBacklog)
			}
			if st.Retries < 1 {
				t.Fatalf("stats %+v: refusals not counted", st)
			}
			t.Logf("%d refusals before the first pause; stats %+v", refused, st)
			ackAll(t, pc, hostileBacklog)
			waitFor(t, func() bool { return q.Stats().Depth == 0 })
			if st := qp.Stats(); st.DeadLettered != 0 || st.Delivered != hostileBacklog {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// A message leaves the durable queue only when delivered, expired or given up by a policy
// the user set: a CONNACK whose limits no queued message fits (Maximum Packet Size 20,
// Maximum QoS 0) pauses the drain and keeps everything; a new connection without the limit
// delivers it all. [MQTT-3.3.4-7] the client must not send a packet above the broker's
// Maximum Packet Size; [MQTT-3.2.2-11] nor a QoS above its Maximum QoS.
func TestHostileQueueConnackLimitsKeepMessages(t *testing.T) {
	qos0 := byte(0)
	for name, ca := range map[string]*packet.Connack{
		"max-packet-size-20": {MaximumPacketSize: 20},
		"max-qos-0":          {MaximumQoS: &qos0},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPeer(t)
			c, pc, _ := connectPeer(t, p, ca, WithReconnectBackoff(ConstantBackoff(time.Millisecond)))
			q := NewMemoryQueue()
			fillQueue(t, q, hostileBacklog)
			// A pause longer than the test, so that it is still on when checked; the new
			// connection below must end it early.
			qp, err := NewQueuePublisher(c, q, WithQueueRetryBackoff(ConstantBackoff(time.Hour)))
			if err != nil {
				t.Fatal(err)
			}
			closePublisher(t, qp)
			waitFor(t, func() bool { return qp.Stats().LastError != nil })
			if !pc.quiet(50 * time.Millisecond) {
				t.Fatal("a message the broker's limits forbid was sent")
			}
			st := qp.Stats()
			if st.Depth != hostileBacklog || st.DeadLettered != 0 || !st.Paused {
				t.Fatalf("stats %+v; want all %d kept, paused", st, hostileBacklog)
			}
			// One pause for the whole backlog, not one per message.
			if st.Pauses != 1 {
				t.Fatalf("%d pauses", st.Pauses)
			}
			// The broker lifts the limit on the next connection.
			pc.nc.Close()
			pc2, _ := p.handshake(&packet.Connack{SessionPresent: true, ReceiveMaximum: 10})
			ackAll(t, pc2, hostileBacklog)
			waitFor(t, func() bool { return q.Stats().Depth == 0 })
		})
	}
}
