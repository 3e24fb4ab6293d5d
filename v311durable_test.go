package tern_test

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
)

// The durable layers on MQTT 3.1.1 against a real Mosquitto: the QueuePublisher over a
// filequeue with a filestore as the client's session store, and QoS 2 recovery from a
// filestore by the next process.

// v311Session is a persistent 3.1.1 session: Clean Session 0 from the first connect
// (Mosquitto 2.0.11 drops at restart a session created clean; BROKERS.md), reconnecting fast.
func v311Session(id string) []tern.Option {
	return []tern.Option{tern.WithProtocol(tern.MQTT311), tern.WithClientID(id), tern.WithCleanStart(false),
		tern.WithSessionExpiry(time.Hour), tern.WithReconnectBackoff(tern.ConstantBackoff(10 * time.Millisecond))}
}

// upEvents returns an option that reports each connection-up to the returned channel.
func upEvents() (tern.Option, <-chan *tern.ConnackInfo) {
	ch := make(chan *tern.ConnackInfo, 64)
	return tern.WithOnConnectionUp(func(i *tern.ConnackInfo) {
		select {
		case ch <- i:
		default:
		}
	}), ch
}

func waitUp(t *testing.T, ch <-chan *tern.ConnackInfo, what string) *tern.ConnackInfo {
	t.Helper()
	select {
	case i := <-ch:
		return i
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no connection within 30s", what)
		return nil
	}
}

// seqCounter counts deliveries per sequence number and signals when every one of want
// numbers has arrived.
type seqCounter struct {
	mu   sync.Mutex
	got  map[uint64]int
	want int
	all  chan struct{}
}

func newSeqCounter(want int) *seqCounter {
	return &seqCounter{got: make(map[uint64]int), want: want, all: make(chan struct{})}
}

func (s *seqCounter) add(m *tern.Message) {
	if len(m.Payload) != 8 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := binary.BigEndian.Uint64(m.Payload)
	s.got[v]++
	if s.got[v] == 1 && len(s.got) == s.want {
		close(s.all)
	}
}

func (s *seqCounter) missing(n int) (missing []int, dups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range n {
		switch c := s.got[uint64(i)]; {
		case c == 0:
			missing = append(missing, i)
		case c > 1:
			dups += c - 1
		}
	}
	return missing, dups
}

// A QueuePublisher over a filequeue, its client on 3.1.1 with a filestore, publishes QoS 1
// and 2 messages while its connection is cut and then the broker restarted: every message
// whose Publish returned nil reaches the subscriber (also 3.1.1, on a persistent session),
// and the queue is empty afterwards.
// Promise: a durable queue never deletes unseen; a message leaves it only when delivered.
func TestV311QueuePublisherFileQueueCutAndRestart(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{Persistence: true})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", b.Log())
		}
	})
	px := faultproxy.New(t, b.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const n = 3000
	seen := newSeqCounter(n)
	subUp, subUps := upEvents()
	sub := mustConnect(t, append(v311Session("v311-dq-sub"), tern.WithBroker(b.URL), subUp)...)
	t.Cleanup(func() { disconnect(t, sub) })
	waitUp(t, subUps, "subscriber")
	if _, err := sub.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: "v311/dq/#", QoS: 2}}, seen.add); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	st, err := filestore.Open(dir + "/store")
	if err != nil {
		t.Fatal(err)
	}
	q, err := filequeue.Open(dir + "/queue")
	if err != nil {
		t.Fatal(err)
	}
	pubUp, pubUps := upEvents()
	pub := mustConnect(t, append(v311Session("v311-dq-pub"), tern.WithBroker(px.URL()), tern.WithStore(st), tern.WithStats(), pubUp)...)
	waitUp(t, pubUps, "publisher")
	if v := pub.Info().Version; v != 4 {
		t.Fatalf("publisher on protocol level %d, want 4", v)
	}
	p, err := tern.NewQueuePublisher(pub, q)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := tern.PublishOptions{Topic: "v311/dq/x", QoS: byte(1 + i%2), Payload: binary.BigEndian.AppendUint64(nil, uint64(i))}
		if err := p.Publish(ctx, m); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		switch i {
		case n / 3:
			px.Cut()
			if !waitUp(t, pubUps, "publisher after the cut").SessionPresent {
				t.Fatal("publisher lost its session at the cut")
			}
		case 2 * n / 3:
			b.Restart(t)
			for what, ch := range map[string]<-chan *tern.ConnackInfo{"subscriber": subUps, "publisher": pubUps} {
				if !waitUp(t, ch, what+" after the restart").SessionPresent {
					t.Fatalf("%s lost its session at the broker restart", what)
				}
			}
		}
	}
	select {
	case <-seen.all:
	case <-ctx.Done():
		missing, _ := seen.missing(n)
		t.Fatalf("%d of %d messages never arrived (first %v); queue %+v, publisher %+v",
			len(missing), n, missing[:min(10, len(missing))], q.Stats(), p.Stats())
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("close publisher: %v", err)
	}
	_, dups := seen.missing(n)
	ps := pub.Stats()
	t.Logf("%d messages, %d duplicates (QoS 1 at least once); publisher: %d connections lost, %d resent",
		n, dups, ps.ConnectionLost, ps.PublishResent)
	if ps.ConnectionLost < 2 {
		t.Errorf("publisher lost its connection %d times, want at least 2 (cut, restart)", ps.ConnectionLost)
	}
	if d := q.Stats().Depth; d != 0 {
		t.Errorf("queue depth %d after every message arrived, want 0", d)
	}
	disconnect(t, pub)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// The acknowledgements are on disk: a reopened queue has nothing to send.
	q2, err := filequeue.Open(dir + "/queue")
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	if d := q2.Stats().Depth; d != 0 {
		t.Errorf("reopened queue holds %d messages, want 0", d)
	}
}
