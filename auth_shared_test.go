package tern

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/scramtest"
	"github.com/ternmq/tern/packet"
	"github.com/ternmq/tern/scram"
)

// countingAuth is an Authenticator that records how many exchanges run at once on it.
type countingAuth struct {
	active, most atomic.Int32
}

func (a *countingAuth) Method() string { return "COUNT" }

func (a *countingAuth) Start(context.Context) ([]byte, error) {
	n := a.active.Add(1)
	for {
		m := a.most.Load()
		if n <= m || a.most.CompareAndSwap(m, n) {
			break
		}
	}
	return []byte("hi"), nil
}

func (a *countingAuth) Continue(context.Context, []byte) ([]byte, error) { return nil, nil }

func (a *countingAuth) Done(context.Context, []byte) error {
	a.active.Add(-1)
	return nil
}

// The publisher pool's members use the main connection's Authenticator, and the Authenticator
// contract says its methods are called one exchange at a time, never concurrently (a SCRAM
// client keeps its nonce between Start and Done). Members connect in parallel, so their
// exchanges must be run one after the other. The peer holds each CONNECT unanswered until it
// has seen another one or 300 ms passed: with exchanges that overlap, both CONNECTs are in.
func TestPoolMembersShareAuthenticatorOneExchangeAtATime(t *testing.T) {
	p := newPeer(t)
	a := &countingAuth{}
	c, err := New(WithBroker(p.url()), WithClientID("auth-pool"), WithAuthenticator(a), WithPublisherPool(2))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc := p.accept()
	pc.read()
	pc.send(&packet.Connack{AuthMethod: "COUNT"})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())

	var (
		mu       sync.Mutex
		connects int
		changed  = make(chan struct{})
		wg       sync.WaitGroup
	)
	for range 2 {
		m := p.accept()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok := m.read().(*packet.Connect); !ok {
				t.Error("member's first packet is not CONNECT")
				return
			}
			mu.Lock()
			connects++
			close(changed)
			changed = make(chan struct{})
			mu.Unlock()
			deadline := time.After(300 * time.Millisecond)
			for {
				mu.Lock()
				n, ch := connects, changed
				mu.Unlock()
				if n == 2 {
					break
				}
				select {
				case <-ch:
					continue
				case <-deadline:
				}
				break
			}
			m.send(&packet.Connack{AuthMethod: "COUNT"})
		}()
	}
	wg.Wait()
	poolMembers(t, c)
	if most := a.most.Load(); most != 1 {
		t.Fatalf("%d authentication exchanges ran at once on one Authenticator, want 1", most)
	}
}

// The same with the real SCRAM authenticator and a SCRAM server per connection: every pool
// member authenticates, none with another member's nonce.
func TestPoolMembersScram(t *testing.T) {
	p := newPeer(t)
	c, err := New(WithBroker(p.url()), WithClientID("scram-pool"), WithAuthenticator(scram.New("alice", "pw")),
		WithPublisherPool(3))
	if err != nil {
		t.Fatal(err)
	}
	serve := func(pc *peerConn) error {
		srv := &scramtest.Server{User: "alice", Password: "pw", Salt: []byte("salt"), Iterations: 4096}
		cp, ok := pc.read().(*packet.Connect)
		if !ok {
			t.Error("first packet is not CONNECT")
			return nil
		}
		final, err := serveScram(t, pc, srv, cp.AuthData)
		if err != nil {
			pc.send(&packet.Connack{ReasonCode: packet.NotAuthorized})
			return err
		}
		pc.send(&packet.Connack{AuthMethod: scram.Method, AuthData: []byte(final)})
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	if err := serve(p.accept()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	refused := make(chan error, 3)
	var wg sync.WaitGroup
	for range 3 {
		pc := p.accept()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serve(pc); err != nil {
				refused <- err
			}
		}()
	}
	wg.Wait()
	close(refused)
	for err := range refused {
		t.Errorf("a pool member's SCRAM proof was refused: %v", err)
	}
	poolMembers(t, c)
}
