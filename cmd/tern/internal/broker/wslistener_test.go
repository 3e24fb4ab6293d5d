package broker

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/ws"
)

// The WebSocket listener serves MQTT over WebSocket on a port the system chose, keeps that
// address across Restart (a client over ws resumes its session and gets what was queued
// while the broker was down), and Close is not held by a connection that never finished its
// HTTP handshake.
func TestWSListenerAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := start(t, Options{WSAddr: "127.0.0.1:0"})
	if b.WSAddr() == "" || strings.HasSuffix(b.WSAddr(), ":0") || b.WSAddr() == b.Addr() {
		t.Fatalf("WSAddr %q (TCP %q)", b.WSAddr(), b.Addr())
	}
	ups := make(chan bool, 4)
	sub := client(t, ctx, b.WSURL(), "ws-sub", tern.WithTransport(ws.New()),
		tern.WithOnConnectionUp(func(i *tern.ConnackInfo) { ups <- i.SessionPresent }))
	<-ups
	msgs, _, err := sub.Subscribe(ctx, []tern.TopicFilter{{Topic: "w/#", QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	pub := client(t, ctx, b.URL(), "tcp-pub")
	publish(t, ctx, pub, "w/before", 2, false)

	// A half-open HTTP connection: it must not keep Restart or Close waiting.
	idle, err := net.Dial("tcp", b.WSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write([]byte("GET /mqtt HTTP/1.1\r\n"))

	addr := b.WSAddr()
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	if b.WSAddr() != addr {
		t.Fatalf("WSAddr %q after restart, was %q", b.WSAddr(), addr)
	}
	select {
	case present := <-ups:
		if !present {
			t.Fatal("the ws subscriber's session was lost")
		}
	case <-ctx.Done():
		t.Fatal("the ws subscriber did not reconnect")
	}
	publish(t, ctx, pub, "w/after", 3, false)
	// Every message, by topic and payload; QoS 1 allows the ones before the restart twice.
	seen := map[string]bool{}
	for len(seen) < 5 {
		select {
		case m := <-msgs:
			seen[m.Topic+"="+string(m.Payload)] = true
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("received %v, want w/before 0-1 and w/after 0-2", seen)
		}
	}
}
