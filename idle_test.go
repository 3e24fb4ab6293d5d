package tern

import (
	"context"
	"net"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// An idle connection holds no write buffer: the writer takes one when bytes are queued and
// gives both back after idleRelease without traffic (the per-connection cost target of PRODUCT.md: at most
// 32 KiB of heap per idle client). Traffic afterwards still flows.
func TestIdleWriterHoldsNoBuffer(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := New(WithBroker(b.URL))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	held := func() (int, int) {
		cn.w.mu.Lock()
		defer cn.w.mu.Unlock()
		return cap(cn.w.buf), cap(cn.w.spare)
	}
	waitIdle := func(what string) {
		t.Helper()
		deadline := time.Now().Add(idleRelease + 10*time.Second)
		for {
			b, s := held()
			if b == 0 && s == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: idle writer holds %d + %d bytes of buffer", what, b, s)
			}
			time.Sleep(time.Millisecond) // polling the writer's state with a deadline
		}
	}
	waitIdle("after CONNECT")
	for i := 0; i < 100; i++ {
		if err := c.Publish(ctx, PublishOptions{Topic: "idle/t", QoS: byte(i % 2), Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitIdle("after publishing")
}

// An idle connected client runs at most 3 goroutines (reader, writer, supervisor): the
// keepalive is a timer and lifecycle callbacks run on a goroutine only while some are queued
// (the per-connection target of PRODUCT.md: at most 3 goroutines per idle client).
func TestIdleClientGoroutines(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 10
	before := runtime.NumGoroutine()
	ups := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		opts := []Option{WithBroker(b.URL), WithKeepAlive(time.Second)}
		if i%2 == 0 { // callbacks set: their goroutine ends once they have run
			opts = append(opts, WithOnConnectionUp(func(*ConnackInfo) { ups <- struct{}{} }))
		}
		c, err := New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Disconnect(context.Background())
	}
	for i := 0; i < n/2; i++ {
		select {
		case <-ups:
		case <-ctx.Done():
			t.Fatal("connection-up callbacks did not run")
		}
	}
	// Several keepalive periods pass while waiting, PINGREQ and PINGRESP included.
	deadline := time.Now().Add(idleRelease + 5*time.Second)
	for {
		extra := runtime.NumGoroutine() - before
		if extra <= 3*n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle clients run %d goroutines, want at most %d", n, extra, 3*n)
		}
		time.Sleep(10 * time.Millisecond) // polling the goroutine count with a deadline
	}
}

// readSizer records the buffer size of the Read in progress on a connection.
type readSizer struct {
	net.Conn
	pending atomic.Int64 // len(p) of the Read in progress, 0 between reads
	largest atomic.Int64
}

func (r *readSizer) Read(p []byte) (int, error) {
	r.pending.Store(int64(len(p)))
	if int64(len(p)) > r.largest.Load() {
		r.largest.Store(int64(len(p)))
	}
	n, err := r.Conn.Read(p)
	r.pending.Store(0)
	return n, err
}

// An idle connection waits for the broker with a small read buffer: the large one is used
// while messages flow and given back by the next quiet read, at the latest the keepalive's
// PINGRESP (per-connection target of PRODUCT.md: at most 32 KiB of heap per idle client).
func TestIdleReaderSmallBuffer(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conns []*readSizer
	var mu sync.Mutex
	dial := func(ctx context.Context, u *url.URL) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		rs := &readSizer{Conn: nc}
		mu.Lock()
		conns = append(conns, rs)
		mu.Unlock()
		return rs, nil
	}
	c, err := New(WithBroker(b.URL), WithDialFunc(dial), WithKeepAlive(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	mu.Lock()
	rs := conns[len(conns)-1]
	mu.Unlock()
	waitSmall := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if n := rs.pending.Load(); n > 0 && n <= 512 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: idle connection waits with a %d-byte read buffer", what, rs.pending.Load())
			}
			time.Sleep(time.Millisecond) // polling the reader's state with a deadline
		}
	}
	waitSmall("after CONNACK")

	msgs, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "idle/read"}}, SubBuffer(1000), SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1000)
	const count = 500
	for i := 0; i < count; i++ {
		if err := c.Publish(ctx, PublishOptions{Topic: "idle/read", Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < count; i++ {
		select {
		case <-msgs:
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages", i, count)
		}
	}
	if l := rs.largest.Load(); l < 32<<10 {
		t.Errorf("messages flowed with reads of at most %d bytes, want the 32 KiB buffer", l)
	}
	waitSmall("after traffic")
}
