package tern

import (
	"context"
	"testing"

	"github.com/ternmq/tern/packet"
)

// Subscription.Identifier is the identifier the SUBSCRIBE carried: the one given with
// SubIdentifier, or the one the client chose itself.
func TestSubscriptionIdentifier(t *testing.T) {
	var given, chosen *Subscription
	_, pc, _ := connectPeerWith(t, func(c *Client) error {
		var err error
		if given, err = c.SubscribeCallback(context.Background(), []TopicFilter{{Topic: "a"}},
			func(*Message) {}, SubIdentifier(7)); err != nil {
			return err
		}
		_, chosen, err = c.Subscribe(context.Background(), []TopicFilter{{Topic: "b"}})
		return err
	})
	sent := map[string]uint32{}
	for range 2 {
		sp, ok := pc.read().(*packet.Subscribe)
		if !ok {
			t.Fatal("peer: expected SUBSCRIBE")
		}
		sent[sp.Subscriptions[0].Filter] = sp.SubscriptionID
		pc.send(&packet.Suback{PacketID: sp.PacketID, ReasonCodes: []packet.ReasonCode{0}})
	}
	if given.Identifier() != 7 || sent["a"] != 7 {
		t.Fatalf("SubIdentifier(7): Identifier %d, sent %d", given.Identifier(), sent["a"])
	}
	if id := chosen.Identifier(); id == 0 || id == 7 || id != sent["b"] {
		t.Fatalf("chosen identifier %d, sent %d", id, sent["b"])
	}
}
