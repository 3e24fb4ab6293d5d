package tern

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// Outbound QoS 2 with an AsyncStore: PUBREC hands the RecordReleased to PutAsync and PUBREL
// waits for it to be durable, while the read loop goes on. The store here records at once
// (so later Deletes and Resets apply in order, as in filestore) and holds the report of
// durability until the test releases it.

// heldRelease is a MemoryStore whose RecordReleased puts, by Put or PutAsync, report
// durability only when the test calls finish on the matching heldPut.
type heldRelease struct {
	*MemoryStore
	puts   chan *heldPut
	closed chan struct{}
	once   sync.Once
}

type heldPut struct {
	rec  StoreRecord
	done func(error)
}

func (h *heldPut) finish(err error) { h.done(err) }

func newHeldRelease(t *testing.T) *heldRelease {
	h := &heldRelease{MemoryStore: NewMemoryStore(), puts: make(chan *heldPut, 16), closed: make(chan struct{})}
	// Runs before the client's cleanup: nothing may stay blocked in a held Put.
	t.Cleanup(func() { h.once.Do(func() { close(h.closed) }) })
	return h
}

func (h *heldRelease) PutAsync(r StoreRecord, done func(error)) {
	err := h.MemoryStore.Put(r)
	if r.Kind != RecordReleased || err != nil {
		done(err)
		return
	}
	h.puts <- &heldPut{rec: r, done: done}
}

// Put holds a RecordReleased too, so a client that waited for Put on its read loop shows
// up as a stalled read loop rather than passing unnoticed.
func (h *heldRelease) Put(r StoreRecord) error {
	if r.Kind != RecordReleased {
		return h.MemoryStore.Put(r)
	}
	res := make(chan error, 1)
	h.PutAsync(r, func(err error) { res <- err })
	select {
	case err := <-res:
		return err
	case <-h.closed:
		return errors.New("test over")
	}
}

// next returns the next held RecordReleased, failing the test after 10 s.
func (h *heldRelease) next(t *testing.T, what string) *heldPut {
	t.Helper()
	select {
	case hp := <-h.puts:
		return hp
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no RecordReleased handed to the store within 10s", what)
		return nil
	}
}

func expectPubrel(t *testing.T, pc *peerConn, id uint16) {
	t.Helper()
	for {
		switch p := pc.read().(type) {
		case *packet.Pingreq:
		case *packet.Ack:
			if p.Kind != packet.PUBREL || p.PacketID != id {
				t.Fatalf("got %v %d, want PUBREL %d", p.Kind, p.PacketID, id)
			}
			return
		default:
			t.Fatalf("got %T %+v, want PUBREL %d", p, p, id)
		}
	}
}

func expectOutcome(t *testing.T, r chan error, what string) error {
	t.Helper()
	select {
	case err := <-r:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no outcome within 10s", what)
		return nil
	}
}

// pubrecSent is one QoS 2 publish answered with PUBREC by the peer, its RecordReleased handed
// to the store and held.
type pubrecSent struct {
	c      *Client
	p      *peer
	pc     *peerConn
	store  *heldRelease
	result chan error // the publish's outcome
	id     uint16     // its packet identifier
	held   *heldPut   // its RecordReleased
}

func startPubrec(t *testing.T, opts ...Option) *pubrecSent {
	t.Helper()
	x := &pubrecSent{p: newPeer(t), store: newHeldRelease(t)}
	x.c, x.pc, _ = connectPeer(t, x.p, &packet.Connack{}, append(append(fastOpts, WithStore(x.store)), opts...)...)
	x.result = publishAsync(t, x.c, PublishOptions{Topic: "rel", QoS: 2, Payload: []byte("a")})
	x.id = readPublish(t, x.pc).PacketID
	x.pc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: x.id})
	x.held = x.store.next(t, "PUBREC")
	return x
}

// PUBREL leaves only once the RecordReleased is durable, and the read loop does not wait for
// it: the second PUBREC's record and a PUBACK behind it are handled while the first record is
// still held. PUBRELs go in the order of the PUBRECs. Promise (the Store's write-ahead
// contract): "On PUBREC, the record is replaced by a RecordReleased before PUBREL is
// written"; [MQTT-4.6.0-4] PUBREL in the order the PUBRECs were received.
func TestPubrelWaitsForDurableRelease(t *testing.T) {
	p := newPeer(t)
	store := newHeldRelease(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{}, append(fastOpts, WithStore(store))...)
	ra := publishAsync(t, c, PublishOptions{Topic: "rel", QoS: 2, Payload: []byte("a")})
	a := readPublish(t, pc)
	rb := publishAsync(t, c, PublishOptions{Topic: "rel", QoS: 2, Payload: []byte("b")})
	b := readPublish(t, pc)
	r1 := publishAsync(t, c, PublishOptions{Topic: "rel", QoS: 1, Payload: []byte("c")})
	q1 := readPublish(t, pc)

	pc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: a.PacketID})
	pc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: b.PacketID})
	pc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: q1.PacketID})
	ha := store.next(t, "first PUBREC")
	hb := store.next(t, "second PUBREC (the read loop waits for the first record)")
	if ha.rec.ID != a.PacketID || hb.rec.ID != b.PacketID {
		t.Fatalf("records for %d, %d; want %d, %d", ha.rec.ID, hb.rec.ID, a.PacketID, b.PacketID)
	}
	if err := expectOutcome(t, r1, "QoS 1 publish behind the held records"); err != nil {
		t.Fatal(err)
	}
	if !pc.quiet(200 * time.Millisecond) {
		t.Fatal("something was written before the RecordReleased was durable")
	}
	ha.finish(nil)
	expectPubrel(t, pc, a.PacketID)
	hb.finish(nil)
	expectPubrel(t, pc, b.PacketID)
	pc.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: a.PacketID})
	pc.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: b.PacketID})
	for _, r := range []chan error{ra, rb} {
		if err := expectOutcome(t, r, "QoS 2 publish"); err != nil {
			t.Fatal(err)
		}
	}
	if recs, _ := store.Load(); len(recs) != 0 {
		t.Fatalf("store still holds %+v", recs)
	}
}

// The connection is cut while the RecordReleased commits. The resumed session must not send
// PUBREL for it (it is not durable yet) nor the PUBLISH (the broker has it); once the record
// is durable, PUBREL goes on the new connection. Promise: PUBREL never before the record is
// durable, across reconnections; the packet identifier stays in use until PUBCOMP.
func TestPubrelAfterReconnectWaitsForRecord(t *testing.T) {
	x := startPubrec(t, WithClientID("rel-cut"))
	x.pc.nc.Close() // the cut

	pc2, _ := x.p.handshake(&packet.Connack{SessionPresent: true})
	if !pc2.quiet(200 * time.Millisecond) {
		t.Fatal("the resumed session sent something for a message whose record is not durable")
	}
	x.held.finish(nil)
	expectPubrel(t, pc2, x.id)
	pc2.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: x.id})
	if err := expectOutcome(t, x.result, "QoS 2 publish"); err != nil {
		t.Fatal(err)
	}
}

// A RecordReleased that fails to become durable never lets PUBREL go: the connection closes
// (the failure is visible, as after a failed Put), and the resumed session sends the PUBLISH
// again with DUP; the broker's new PUBREC stores the record again and the exchange ends.
// Promise: no PUBREL without a durable record; a store failure fails the connection.
func TestPubrelStoreFailureResendsPublish(t *testing.T) {
	downs := make(chan error, 4)
	x := startPubrec(t, WithClientID("rel-fail"), WithOnConnectionDown(func(err error) bool { downs <- err; return true }))
	errDisk := errors.New("disk on fire")
	x.held.finish(errDisk)
	select {
	case err := <-downs:
		if !errors.Is(err, errDisk) || !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("connection down with %v, want the store failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed after the failed record")
	}
	for {
		pkt, err := x.pc.tryRead(10 * time.Second)
		if err != nil {
			break // closed
		}
		if a, ok := pkt.(*packet.Ack); ok && a.Kind == packet.PUBREL {
			t.Fatal("PUBREL written after the failed record")
		}
	}

	pc2, _ := x.p.handshake(&packet.Connack{SessionPresent: true})
	again := readPublish(t, pc2)
	if again.PacketID != x.id || !again.Dup || string(again.Payload) != "a" {
		t.Fatalf("resent %+v, want a DUP copy of %d", again, x.id)
	}
	pc2.send(&packet.Ack{Kind: packet.PUBREC, PacketID: x.id})
	x.store.next(t, "second PUBREC").finish(nil)
	expectPubrel(t, pc2, x.id)
	pc2.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: x.id})
	if err := expectOutcome(t, x.result, "QoS 2 publish"); err != nil {
		t.Fatal(err)
	}
}

// The session is lost while the RecordReleased commits: the broker may not have passed the
// message on (Mosquitto keeps an incoming QoS 2 message until PUBREL and drops it with the
// session), so it is sent again as a new exchange, its publish record is put back in the
// store, and the late report of the overtaken release record sends nothing. Promise: nothing
// acknowledged is lost (at least once across a lost session).
func TestPubrelSessionLostWhileStoring(t *testing.T) {
	x := startPubrec(t, WithClientID("rel-lost"))
	x.pc.nc.Close()

	pc2, _ := x.p.handshake(&packet.Connack{SessionPresent: false})
	again := readPublish(t, pc2)
	if again.Dup || string(again.Payload) != "a" {
		t.Fatalf("sent again as %+v, want the message as a new exchange", again)
	}
	x.held.finish(nil)
	if !pc2.quiet(200 * time.Millisecond) {
		t.Fatal("something was sent for the overtaken release record")
	}
	recs, _ := x.store.Load()
	if len(recs) != 1 || recs[0].Kind != RecordPublish {
		t.Fatalf("store holds %+v, want the publish record again", recs)
	}
	pc2.send(&packet.Ack{Kind: packet.PUBREC, PacketID: again.PacketID})
	x.store.next(t, "PUBREC of the new exchange").finish(nil)
	expectPubrel(t, pc2, again.PacketID)
	pc2.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: again.PacketID})
	if err := expectOutcome(t, x.result, "publish after the session loss"); err != nil {
		t.Fatal(err)
	}
	if recs, _ := x.store.Load(); len(recs) != 0 {
		t.Fatalf("store still holds %+v", recs)
	}
}

// Disconnect while a RecordReleased commits returns without waiting for it, and the late
// durability report is harmless. Promise: Close/Disconnect never hang on the store.
func TestPubrelDisconnectWhileStoring(t *testing.T) {
	x := startPubrec(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := x.c.Disconnect(ctx); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	if err := expectOutcome(t, x.result, "publish at Disconnect"); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish ended with %v, want ErrClosed", err)
	}
	x.held.finish(nil) // after the client is gone: must neither panic nor write
}
