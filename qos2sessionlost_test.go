package tern

import (
	"errors"
	"testing"

	"github.com/ternmq/tern/packet"
)

// A QoS 2 message the broker acknowledged with PUBREC, when the connection ends before
// PUBCOMP and the broker comes back without the session: the broker may never have passed
// it on (Mosquitto keeps an incoming QoS 2 message until PUBREL and drops it with a session
// that ends), so under Republish it is sent again as a new exchange, and under FailPending
// the publish fails with ErrSessionLost. "Nothing acknowledged is ever lost."
func TestReleasedQoS2ResentWhenSessionLost(t *testing.T) {
	for _, policy := range []SessionLossPolicy{Republish, FailPending} {
		t.Run(map[SessionLossPolicy]string{Republish: "republish", FailPending: "fail"}[policy], func(t *testing.T) {
			p := newPeer(t)
			c, pc, _ := connectPeer(t, p, &packet.Connack{}, append(fastOpts, WithSessionLossPolicy(policy))...)
			errc := make(chan error, 1)
			go func() {
				errc <- c.Publish(testCtx(t), PublishOptions{Topic: "q2/lost", QoS: 2, Payload: []byte("keep")})
			}()
			pub := pc.read().(*packet.Publish)
			pc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: pub.PacketID})
			if rel, ok := pc.read().(*packet.Ack); !ok || rel.Kind != packet.PUBREL {
				t.Fatal("no PUBREL after PUBREC")
			}
			pc.nc.Close() // no PUBCOMP; the broker comes back without the session
			pc2, _ := p.handshake(&packet.Connack{SessionPresent: false})
			pc2.closeOnEOF()
			if policy == FailPending {
				if err := <-errc; !errors.Is(err, ErrSessionLost) {
					t.Fatalf("Publish: %v, want ErrSessionLost", err)
				}
				return
			}
			again, ok := pc2.read().(*packet.Publish)
			if !ok || string(again.Payload) != "keep" || again.Dup {
				t.Fatalf("after the session was lost: %+v, want the message sent again as new", again)
			}
			pc2.send(&packet.Ack{Kind: packet.PUBREC, PacketID: again.PacketID})
			if rel, ok := pc2.read().(*packet.Ack); !ok || rel.Kind != packet.PUBREL {
				t.Fatal("no PUBREL for the new exchange")
			}
			pc2.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: again.PacketID})
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A QoS 2 message restored from a store past PUBREC (its bytes no longer kept) when the
// broker comes back without the session: it cannot be sent again, and the broker may have
// dropped it, so it must not count as delivered. It fails (Stats.PublishFailed), its record
// leaves the store, and no PUBREL goes to a broker that has forgotten the exchange. "Every
// give-up is visible."
func TestRestoredReleasedQoS2FailsWhenSessionLost(t *testing.T) {
	st := NewMemoryStore()
	if err := st.Put(StoreRecord{Kind: RecordReleased, ID: 7, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{SessionPresent: false},
		append(fastOpts, WithStore(st), WithStats())...)
	pc.closeOnEOF()
	s := c.Stats()
	if s.PublishFailed != 1 || s.PublishAcked != 0 || s.InFlight != 0 {
		t.Fatalf("restored released message after session loss: failed %d, acked %d, in flight %d; want 1, 0, 0",
			s.PublishFailed, s.PublishAcked, s.InFlight)
	}
	recs, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Kind.outbound() {
			t.Fatalf("record %v %d still stored", r.Kind, r.ID)
		}
	}
}
