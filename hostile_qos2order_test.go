package tern_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

// TestHostileQoS2FileStoreAckOrder: QoS 2 with an AsyncStore (filestore), against
// Mosquitto with a small window. Three subscriptions share the connection: a channel read
// by three goroutines that acknowledge in whatever order they get to it, a channel
// acknowledged at once by one goroutine, and a callback. The store completes receipts on
// its own goroutine (which sends the PUBRECs it releases) while PUBRELs arrive. On the wire, PUBRECs go in the order the
// PUBLISHes came ([MQTT-4.6.0-2]), every PUBREL gets its PUBCOMP, and each message reaches
// its subscription exactly once.
func TestHostileQoS2FileStoreAckOrder(t *testing.T) {
	const n = 600
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	px := faultproxy.New(t, b.Addr)
	px.Record(true)
	st, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var (
		mu    sync.Mutex
		seen  = make(map[uint64]int)
		total atomic.Int32
		all   = make(chan struct{})
	)
	got := func(m *tern.Message) {
		mu.Lock()
		seen[binary.BigEndian.Uint64(m.Payload)]++
		mu.Unlock()
		if total.Add(1) == n {
			close(all)
		}
	}
	sub, err := tern.New(tern.WithBroker(px.URL()), tern.WithStore(st), tern.WithReceiveMaximum(16))
	if err != nil {
		t.Fatal(err)
	}
	var consumers sync.WaitGroup
	chA, _, err := sub.Subscribe(ctx, []tern.TopicFilter{{Topic: "hold/a", QoS: 2}})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			for m := range chA {
				got(m)
				for range rand.IntN(4) {
					runtime.Gosched()
				}
				m.Ack()
			}
		}()
	}
	chB, _, err := sub.Subscribe(ctx, []tern.TopicFilter{{Topic: "hold/b", QoS: 2}})
	if err != nil {
		t.Fatal(err)
	}
	consumers.Add(1)
	go func() {
		defer consumers.Done()
		for m := range chB {
			got(m)
			m.Ack()
		}
	}()
	if _, err := sub.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: "hold/c", QoS: 2}}, got); err != nil {
		t.Fatal(err)
	}
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	pub := mustConnect(t, tern.WithBroker(b.URL))
	defer pub.Disconnect(ctx)
	toks := make([]*tern.PublishToken, n)
	for i := range n {
		topic := []string{"hold/a", "hold/b", "hold/c"}[i%3]
		toks[i], err = pub.PublishAsync(ctx, tern.PublishOptions{Topic: topic, QoS: 2,
			Payload: binary.BigEndian.AppendUint64(nil, uint64(i))})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, tok := range toks {
		if err := tok.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatalf("the subscriptions got %d of %d messages", total.Load(), n)
	}
	// The exchanges end with the client's PUBCOMPs: wait until the wire has all of them
	// (receipts commit, then PUBRECs go, then the PUBRELs come back).
	var up, down bytes.Buffer
	for {
		up.Reset()
		down.Reset()
		for _, sg := range px.Recording() {
			if sg.Conn != 1 {
				t.Fatalf("unexpected connection %d: the subscriber's connection was cut", sg.Conn)
			}
			if sg.Dir == faultproxy.Up {
				up.Write(sg.Data)
			} else {
				down.Write(sg.Data)
			}
		}
		if c := len(wireIDs(t, bytes.NewBuffer(up.Bytes()), packet.PUBCOMP)); c >= n {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d PUBRECs on the wire, want %d", len(wireIDs(t, &up, packet.PUBREC)), n)
		case <-time.After(5 * time.Millisecond): // polling the recording, with ctx's deadline
		}
	}
	if err := sub.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	consumers.Wait()
	for i := range uint64(n) {
		if seen[i] != 1 {
			t.Fatalf("message %d delivered %d times", i, seen[i])
		}
	}
	published := wireIDs(t, &down, packet.PUBLISH)
	recs := wireIDs(t, &up, packet.PUBREC)
	if len(published) != n || !slices.Equal(recs, published) {
		t.Fatalf("PUBRECs are not in PUBLISH order:\nPUBLISH %v\nPUBREC  %v", published, recs)
	}
	rels, comps := wireIDs(t, &down, packet.PUBREL), wireIDs(t, &up, packet.PUBCOMP)
	if len(rels) != n || !slices.Equal(comps, rels) {
		t.Fatalf("%d PUBRELs answered by %d PUBCOMPs, or out of order", len(rels), len(comps))
	}
}

// wireIDs decodes a recorded MQTT 5 stream and returns the packet identifiers of the
// packets of type kind, in order.
func wireIDs(t *testing.T, stream *bytes.Buffer, kind packet.Type) []uint16 {
	t.Helper()
	r := packet.NewReader(bytes.NewReader(stream.Bytes()), 1<<20)
	var ids []uint16
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return ids
		}
		if f.Type() == kind {
			p, err := packet.Decode(&f)
			if err != nil {
				t.Fatal(err)
			}
			switch p := p.(type) {
			case *packet.Publish:
				ids = append(ids, p.PacketID)
			case *packet.Ack:
				ids = append(ids, p.PacketID)
			}
		}
		f.Release()
	}
}
