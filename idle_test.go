package tern

import (
	"context"
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
