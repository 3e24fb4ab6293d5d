package tern

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// Disconnect keeps in-flight records in the store exactly when the broker keeps the session:
// the session expiry in force (ours, or the broker's from CONNACK), unless DISCONNECT
// overrides it. With expiry 0 the session ends and the records go with it.
func TestDisconnectKeepsStoreBySessionExpiry(t *testing.T) {
	hour, zero := time.Hour, time.Duration(0)
	for _, tc := range []struct {
		name     string
		expiry   time.Duration
		broker   *uint32 // Session Expiry in CONNACK
		override *time.Duration
		keep     bool
	}{
		{"expiry kept", time.Hour, nil, nil, true},
		{"override to longer", time.Hour, nil, &hour, true},
		{"override to zero", time.Hour, nil, &zero, false},
		{"broker sets zero", time.Hour, packet.Ptr(uint32(0)), nil, false},
		{"no expiry", 0, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t)
			store := NewMemoryStore()
			c, pc, _ := connectPeer(t, p, &packet.Connack{SessionExpiry: tc.broker},
				append(fastOpts, WithStore(store), WithClientID("ke"), WithCleanStart(false),
					WithSessionExpiry(tc.expiry))...)
			one := publishAsync(t, c, PublishOptions{Topic: "s", QoS: 1, Payload: []byte("one")})
			readPublish(t, pc)
			two := publishAsync(t, c, PublishOptions{Topic: "s", QoS: 2, Payload: []byte("two")})
			p2 := readPublish(t, pc)
			pc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p2.PacketID})
			if a, ok := pc.read().(*packet.Ack); !ok || a.Kind != packet.PUBREL {
				t.Fatal("expected PUBREL")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.DisconnectWith(ctx, DisconnectOptions{SessionExpiry: tc.override}); err != nil {
				t.Fatal(err)
			}
			for _, errc := range []chan error{one, two} {
				if err := <-errc; !errors.Is(err, ErrClosed) {
					t.Fatalf("in-flight publish ended with %v, want ErrClosed", err)
				}
			}
			recs, _ := store.Load()
			want := 0
			if tc.keep {
				want = 2
			}
			if len(recs) != want {
				t.Fatalf("store holds %d records after Disconnect, want %d", len(recs), want)
			}
			if tc.keep && (recs[0].Kind != RecordPublish || recs[1].Kind != RecordReleased) {
				t.Fatalf("kept %+v", recs)
			}
		})
	}
}
