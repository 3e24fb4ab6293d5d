package tern

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/packet"
)

// A ws:// or wss:// broker without a WebSocket transport is refused by New and SetBrokers,
// with an error that says how to wire the transport, rather than at the first dial.
func TestWebSocketSchemeNeedsTransport(t *testing.T) {
	for _, raw := range []string{"ws://127.0.0.1:8080/mqtt", "wss://broker.example/mqtt"} {
		_, err := New(WithBroker(raw))
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "tern.WithTransport(ws.New())") ||
			!strings.Contains(err.Error(), "github.com/ternmq/tern/ws") {
			t.Fatalf("New(%s): %v, want ErrInvalidOption naming the ws module and WithTransport", raw, err)
		}
	}
	if _, err := New(WithBroker("ws:///mqtt"), WithTransport(tcpAsWS{})); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("ws URL without a host: %v", err)
	}
	c, err := New(WithBroker("mqtt://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetBrokers("ws://127.0.0.1:8080/mqtt"); err == nil || !strings.Contains(err.Error(), "tern.WithTransport(ws.New())") {
		t.Fatalf("SetBrokers: %v", err)
	}
}

// tcpAsWS is a Transport for "ws" and "wss" that dials the host over plain TCP and records
// what the client handed it.
type tcpAsWS struct {
	mu   *sync.Mutex
	envs *[]DialEnv
}

func (tcpAsWS) Schemes() []string { return []string{"ws", "wss"} }

func (t tcpAsWS) Dial(ctx context.Context, u *url.URL, env DialEnv) (net.Conn, error) {
	t.mu.Lock()
	*t.envs = append(*t.envs, env)
	t.mu.Unlock()
	return env.Dialer.DialContext(ctx, "tcp", u.Host)
}

// A transport serves its schemes through WithBroker like the built-in ones, and gets the
// client's TLS config for the secure scheme, server name set from the URL's host.
func TestTransportServesScheme(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	var mu sync.Mutex
	var envs []DialEnv
	tr := tcpAsWS{mu: &mu, envs: &envs}
	ctx := testCtx(t)
	for _, scheme := range []string{"ws", "wss"} {
		c := newTestClient(t, scheme+"://"+b.Addr+"/mqtt", WithTransport(tr))
		if err := c.Publish(ctx, PublishOptions{Topic: "tr/" + scheme, QoS: 1, Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(envs) != 2 {
		t.Fatalf("%d dials, want 2", len(envs))
	}
	if envs[0].TLSConfig != nil || envs[0].Dialer == nil {
		t.Fatalf("ws dial env %+v: want no TLS config and the client's dialer", envs[0])
	}
	if envs[1].TLSConfig == nil || envs[1].TLSConfig.ServerName != "127.0.0.1" || envs[1].Redirected {
		t.Fatalf("wss dial env %+v: want a TLS config for host 127.0.0.1", envs[1])
	}
}

// A server redirect (CONNACK 0x9C) to a wss:// URL reaches the transport marked as a
// redirect, with the TLS server name of the target's host, not the configured one: the
// certificate must name the server the client was sent to.
func TestTransportRedirectServerName(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	p := newPeer(t)
	var mu sync.Mutex
	var envs []DialEnv
	_, peerPort, _ := net.SplitHostPort(p.ln.Addr().String())
	c, err := New(append([]Option{WithBroker("wss://127.0.0.1:" + peerPort + "/mqtt"),
		WithTransport(tcpAsWS{mu: &mu, envs: &envs}),
		WithTLSConfig(&tls.Config{ServerName: "configured.example"})}, fastOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	connected := make(chan error, 1)
	go func() { connected <- c.Connect(testCtx(t)) }()
	defer c.Disconnect(context.Background())
	p.handshake(&packet.Connack{ReasonCode: packet.UseAnotherServer,
		ServerReference: "wss://localhost:" + strconv.Itoa(b.Port) + "/mqtt"})
	if err := <-connected; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(envs) != 2 {
		t.Fatalf("%d dials, want 2", len(envs))
	}
	if e := envs[0]; e.Redirected || e.TLSConfig.ServerName != "configured.example" {
		t.Fatalf("first dial: redirected=%v server name %q", e.Redirected, e.TLSConfig.ServerName)
	}
	if e := envs[1]; !e.Redirected || e.TLSConfig.ServerName != "localhost" {
		t.Fatalf("redirected dial: redirected=%v server name %q", e.Redirected, e.TLSConfig.ServerName)
	}
}
