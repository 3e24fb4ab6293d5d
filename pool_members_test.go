package tern

import (
	"context"
	"strings"
	"testing"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

// A CONNECT builder that sets the client id (and asks for a session) serves the main
// connection; pool members keep their own ids and clean sessions, or every member would
// take over the others' connections for ever.
func TestPoolMembersKeepTheirIDsUnderConnectBuilder(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	builder := func(_ context.Context, p *packet.Connect) error {
		p.ClientID, p.CleanStart, p.SessionExpiry = "built", false, 3600
		return nil
	}
	c := newTestClient(t, b.URL, WithClientID("built"), WithConnectPacketBuilder(builder), WithPublisherPool(3))
	ms := poolMembers(t, c)
	for i, m := range ms {
		if !strings.HasPrefix(m.ClientID(), "built-pub-") {
			t.Fatalf("member %d id %q", i+1, m.ClientID())
		}
	}
	log := b.Log()
	for i := range ms {
		id := "built-pub-" + string(rune('1'+i))
		if !strings.Contains(log, " as "+id+" (p5, c1,") {
			t.Fatalf("Mosquitto did not see member %s connect with a clean session:\n%s", id, tail(log, 2000))
		}
	}
	if strings.Contains(log, "already connected, closing old connection") {
		t.Fatalf("connections took each other over:\n%s", tail(log, 2000))
	}
}

// A member's session never survives a reconnect (members start clean), so the parent's
// FailPending must not fail what a member had in flight: members republish, as
// WithPublisherPool says.
func TestPoolMembersRepublishUnderFailPending(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	c := newTestClient(t, b.URL, WithSessionLossPolicy(FailPending), WithPublisherPool(2))
	for i, m := range poolMembers(t, c) {
		if m.cfg.sessionLoss != Republish {
			t.Fatalf("member %d session loss policy %d, want Republish", i+1, m.cfg.sessionLoss)
		}
	}
}
