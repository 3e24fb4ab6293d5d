package tern

import (
	"fmt"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// A subscription made before Connect whose SUBACK arrives while the client resubscribes
// after a session loss: the read loop writes the subscription's results while
// resubscribeAll reads them. Under -race this catches an unguarded read. The subscription
// has many filters so that the read loop, building their results, takes subMu after
// resubscribeAll has read them: the order in which an unguarded read goes unordered.
func TestResubscribeWhileEarlySubackArrives(t *testing.T) {
	const nFilters = 3000
	p := newPeer(t)
	c, err := New(WithBroker(p.url()), WithStats(), WithReconnectBackoff(ConstantBackoff(10*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	filters := make([]TopicFilter, nFilters)
	for i := range filters {
		filters[i] = TopicFilter{Topic: fmt.Sprintf("early/%d", i), QoS: 1}
	}
	_, sub, err := c.SubscribeQueue(testCtx(t), filters)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	t.Cleanup(func() { c.Disconnect(testCtx(t)) })

	// First connection: the SUBSCRIBE goes out and is not answered; the connection ends.
	pc1, _ := p.handshake(&packet.Connack{})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	sp, ok := pc1.read().(*packet.Subscribe)
	if !ok || len(sp.Subscriptions) != nFilters {
		t.Fatalf("first packet after CONNACK: %T", sp)
	}
	pc1.nc.Close()

	// Second connection: the session is lost (the client resubscribes its live
	// subscriptions), and the SUBACK of the first SUBSCRIBE comes right behind CONNACK.
	pc2 := p.accept()
	if _, ok := pc2.read().(*packet.Connect); !ok {
		t.Fatal("second connection: first packet is not CONNECT")
	}
	codes := make([]packet.ReasonCode, nFilters)
	b := (&packet.Connack{}).AppendTo(nil)
	b = (&packet.Suback{PacketID: sp.PacketID, ReasonCodes: codes}).AppendTo(b)
	pc2.sendRaw(b)
	if err := sub.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// Answer what the client sends now (the pending SUBSCRIBE again, the resubscription),
	// so nothing waits for an answer at Disconnect.
	for range 2 {
		s, ok := pc2.read().(*packet.Subscribe)
		if !ok {
			t.Fatalf("want SUBSCRIBE, got %T", s)
		}
		pc2.send(&packet.Suback{PacketID: s.PacketID, ReasonCodes: make([]packet.ReasonCode, len(s.Subscriptions))})
	}
}
