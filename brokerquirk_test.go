package tern

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

// Mosquitto 2.0.11, restarted with persistence, sends PUBLISH (DUP=1) again for QoS 2
// messages it had already released with PUBREL, once a client has more of them in flight
// than max_inflight_messages: [MQTT-4.3.3-6] says the sender must not re-send the PUBLISH
// after PUBREL. A client cannot tell such a copy from a new message under the identifier,
// so it delivers it (TestInboundQoS2ReceiptAcrossReconnect), and TestFaultBrokerRestart
// allows exactly these duplicates. This test pins the broker's behaviour with a raw
// subscriber, so the allowance can go if a Mosquitto upgrade fixes it.
func TestMosquittoReplaysReleasedQoS2AfterRestart(t *testing.T) {
	const (
		n        = 50
		inflight = 20 // the broker's max_inflight_messages
	)
	b := brokertest.StartMosquitto(t, brokertest.Config{Persistence: true, MaxInflight: inflight})
	brokerLogOnFailure(t, b)
	rawConnect := func() (*peerConn, *packet.Connack) {
		t.Helper()
		nc, err := net.DialTimeout("tcp", b.Addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		pc := &peerConn{t: t, nc: nc, r: packet.NewReader(nc, 1<<16)}
		// Clean Start 0 from the first connection: see BROKERS.md.
		pc.send(&packet.Connect{ClientID: "quirk-sub", KeepAlive: 60, SessionExpiry: 3600, ReceiveMaximum: 1000})
		ca, ok := pc.read().(*packet.Connack)
		if !ok || ca.ReasonCode != packet.Success {
			t.Fatalf("CONNACK %+v", ca)
		}
		return pc, ca
	}

	// The subscriber takes n messages through PUBREC and receives PUBREL for each, but
	// leaves without PUBCOMP: the broker holds n exchanges released with PUBREL.
	pc, _ := rawConnect()
	pc.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "quirk", QoS: 2}}})
	if sa, ok := pc.read().(*packet.Suback); !ok || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != 2 {
		t.Fatalf("SUBACK %+v", sa)
	}
	pub := newTestClient(t, b.URL)
	ctx := faultCtx(t, time.Minute)
	for i := range n {
		if err := pub.Publish(ctx, PublishOptions{Topic: "quirk", QoS: 2, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	payloads := make(map[uint16]string)
	for released := 0; released < n; {
		switch p := pc.read().(type) {
		case *packet.Publish:
			payloads[p.PacketID] = string(p.Payload)
			pc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
		case *packet.Ack:
			if p.Kind != packet.PUBREL || payloads[p.PacketID] == "" {
				t.Fatalf("got %v %d", p.Kind, p.PacketID)
			}
			released++
		default:
			t.Fatalf("got %T", p)
		}
	}
	pc.nc.Close()
	b.Restart(t) // SIGTERM: the broker saves its database on the way out

	pc2, ca := rawConnect()
	if !ca.SessionPresent {
		t.Fatal("session lost at the restart")
	}
	var pubrels, replays int
	var example string
	for seen := make(map[uint16]bool); len(seen) < n; {
		switch p := pc2.read().(type) {
		case *packet.Publish:
			if !p.Dup || payloads[p.PacketID] != string(p.Payload) || seen[p.PacketID] {
				t.Fatalf("PUBLISH id %d dup %v payload %q", p.PacketID, p.Dup, p.Payload)
			}
			seen[p.PacketID] = true
			replays++
			if example == "" {
				example = fmt.Sprintf("e.g. id %d, released with PUBREL before the restart, then sent as "+
					"PUBLISH % x (as decoded, re-encoded)", p.PacketID, p.AppendTo(nil))
			}
		case *packet.Ack:
			if p.Kind != packet.PUBREL || payloads[p.PacketID] == "" || seen[p.PacketID] {
				t.Fatalf("got %v %d", p.Kind, p.PacketID)
			}
			seen[p.PacketID] = true
			pubrels++
		default:
			t.Fatalf("got %T", p)
		}
	}
	t.Logf("after the restart: PUBREL for %d released exchanges, PUBLISH DUP=1 for the other %d; %s",
		pubrels, replays, example)
	if replays == 0 {
		t.Fatalf("Mosquitto resent PUBREL for all %d released exchanges: the quirk is gone, and "+
			"TestFaultBrokerRestart may demand no QoS 2 duplicate at all", n)
	}
	if pubrels != inflight {
		t.Errorf("PUBREL for %d exchanges, want max_inflight_messages (%d)", pubrels, inflight)
	}
}
