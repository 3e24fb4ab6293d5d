package ws_test

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/ws"
)

// The fault suite's cut and resume, over WebSocket: proxies cut the TCP connections under the
// WebSockets of a publisher and of a subscriber, both with persistent sessions. Both reconnect
// over ws:// and resume their sessions; every message acknowledged to the publisher reaches
// the subscriber (nothing acknowledged is lost).
//
// The phases are sequential because of a mochi v2.7.9 deadlock seen here: a client's
// Inflight.NextImmediate takes its read lock twice (directly and through GetAll), so a
// publisher routing a message to that client (Inflight.Set, a write lock) while the client's
// own acknowledgement is processed locks both for ever. So the publisher publishes (cut three
// times) while the subscriber is away, and the subscriber drains its queued session (cut once
// more) after the publisher is done.
func TestCutAndResumeOverWebSocket(t *testing.T) {
	addr := mochi(t, nil)
	pubProxy := faultproxy.New(t, addr)
	subProxy := faultproxy.New(t, addr)
	ctx := testCtx(t)
	var pubUps, subUps atomic.Int64
	session := func(id string, ups *atomic.Int64) []tern.Option {
		return []tern.Option{tern.WithTransport(ws.New()), tern.WithClientID(id), tern.WithCleanStart(false),
			tern.WithSessionExpiry(time.Hour), tern.WithReconnectBackoff(tern.ConstantBackoff(10 * time.Millisecond)),
			tern.WithOnConnectionUp(func(*tern.ConnackInfo) { ups.Add(1) })}
	}

	const n = 1000
	var mu sync.Mutex
	seen := make(map[uint32]bool)
	half, all := make(chan struct{}), make(chan struct{})
	sub, err := tern.New(append([]tern.Option{tern.WithBroker("ws://" + subProxy.Addr() + "/mqtt")},
		session("ws-cut-sub", &subUps)...)...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sub.SubscribeCallback(ctx, []tern.TopicFilter{{Topic: "cut/#", QoS: 1}}, func(m *tern.Message) {
		mu.Lock()
		defer mu.Unlock()
		seq := binary.BigEndian.Uint32(m.Payload)
		if seen[seq] {
			return // a resend after a cut
		}
		seen[seq] = true
		switch len(seen) {
		case n / 2:
			close(half)
		case n:
			close(all)
		}
	}, tern.SubBuffer(n))
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(ctx)
	if err := s.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	// The subscriber goes away: its connection is cut and it cannot come back yet.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // connections to it are refused
	subProxy.SetTarget(deadAddr)
	subProxy.Cut()

	pub := client(t, "ws://"+pubProxy.Addr()+"/mqtt", session("ws-cut-pub", &pubUps)...)
	var acked atomic.Int64
	var wg sync.WaitGroup
	const workers = 4
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				p := make([]byte, 4)
				binary.BigEndian.PutUint32(p, uint32(i))
				if err := pub.Publish(ctx, tern.PublishOptions{Topic: "cut/x", QoS: 1, Payload: p}); err != nil {
					errs <- err
					return
				}
				acked.Add(1)
			}
		}()
	}
	// Cut at fixed points of progress, not of time.
	const cuts = 3
	for k := 1; k <= cuts; k++ {
		for acked.Load() < int64(k*n/(cuts+1)) && ctx.Err() == nil {
			time.Sleep(time.Millisecond) // polling progress, bounded by the test's deadline
		}
		pubProxy.Cut()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// The subscriber comes back, resumes its session, and is cut again halfway through.
	subProxy.SetTarget(addr)
	select {
	case <-half:
		subProxy.Cut()
	case <-ctx.Done():
		t.Fatal("the subscriber did not resume")
	}
	select {
	case <-all:
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("subscriber has %d of %d messages", len(seen), n)
	}
	if got := pubUps.Load(); got < 1+cuts {
		t.Fatalf("publisher made %d connections, want at least %d: the cuts did not take", got, 1+cuts)
	}
	if got := subUps.Load(); got < 2 {
		t.Fatalf("subscriber made %d connections, want at least 2", got)
	}
}
