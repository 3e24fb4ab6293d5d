package tern

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// silentListener accepts connections and never writes to them; the connections stay open
// until the test ends.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, nc := range conns {
				nc.Close()
			}
		}()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, nc)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// A Connect that ends because its ctx ended reports the ctx's error, whichever step the
// handshake was in: TCP/TLS dial, waiting for CONNACK. Never a bare "i/o timeout".
func TestConnectEndedByCtxReportsCtxError(t *testing.T) {
	cases := []struct {
		name   string
		broker func(t *testing.T) string
		cancel bool // cancel instead of letting the deadline pass
	}{
		{"connack-deadline", func(t *testing.T) string { return "mqtt://" + silentListener(t) }, false},
		{"connack-cancel", func(t *testing.T) string { return "mqtt://" + silentListener(t) }, true},
		{"tls-handshake-deadline", func(t *testing.T) string { return "mqtts://" + silentListener(t) }, false},
		{"tls-handshake-cancel", func(t *testing.T) string { return "mqtts://" + silentListener(t) }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(WithBroker(tc.broker(t)), WithTLSConfig(&tls.Config{InsecureSkipVerify: true}))
			if err != nil {
				t.Fatal(err)
			}
			var ctx context.Context
			var cancel context.CancelFunc
			want := context.DeadlineExceeded
			if tc.cancel {
				ctx, cancel = context.WithCancel(context.Background())
				time.AfterFunc(50*time.Millisecond, cancel) // the handshake is stuck by then or later
				want = context.Canceled
			} else {
				ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
			}
			defer cancel()
			err = c.Connect(ctx)
			if !errors.Is(err, want) {
				t.Fatalf("Connect = %v, want %v", err, want)
			}
			if strings.Contains(err.Error(), "i/o timeout") || strings.Contains(err.Error(), "operation was canceled") {
				t.Fatalf("Connect = %q: the ctx's error is hidden behind a network error", err)
			}
		})
	}
}

// The connect timeout is a deadline too: the error says so and matches
// context.DeadlineExceeded.
func TestConnectTimeoutReportsDeadline(t *testing.T) {
	c, err := New(WithBroker("mqtt://"+silentListener(t)), WithConnectTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Connect(testCtx(t))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connect timeout") {
		t.Fatalf("Connect = %v, want the connect timeout as context.DeadlineExceeded", err)
	}
	if strings.Contains(err.Error(), "i/o timeout") {
		t.Fatalf("Connect = %q", err)
	}
}

// failingAuth is an Authenticator whose answer to every challenge is an error.
type failingAuth struct{}

func (failingAuth) Method() string                                   { return "TEST" }
func (failingAuth) Start(context.Context) ([]byte, error)            { return nil, nil }
func (failingAuth) Continue(context.Context, []byte) ([]byte, error) { return nil, errors.New("no") }
func (failingAuth) Done(context.Context, []byte) error               { return nil }

// connectAsync starts Connect on a new client of p and returns the peer's side, after
// CONNECT, and the channel Connect's result arrives on.
func connectAsync(t *testing.T, p *peer, opts ...Option) (*peerConn, <-chan error) {
	t.Helper()
	c, err := New(append([]Option{WithBroker(p.url())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc := p.accept()
	pc.read() // CONNECT
	return pc, errc
}

// "authenticate:" prefixes an error only when enhanced authentication ran. A broker that
// sends AUTH to a client without an authenticator breaks the protocol ([MQTT-4.12.0-6]: the
// server must not send AUTH unless the client sent an Authentication Method).
func TestAuthenticatePrefixOnlyWhenAuthRuns(t *testing.T) {
	t.Run("no-authenticator", func(t *testing.T) {
		pc, errc := connectAsync(t, newPeer(t))
		pc.send(&packet.Auth{ReasonCode: packet.ContinueAuthentication, AuthMethod: "X"})
		err := <-errc
		if err == nil || strings.Contains(err.Error(), "authenticate:") || !errors.Is(err, packet.ErrProtocol) {
			t.Fatalf("Connect = %v, want a protocol error without \"authenticate:\"", err)
		}
		if code := pc.expectDisconnect(); code != packet.ProtocolError {
			t.Fatalf("DISCONNECT %v, want protocol error", code)
		}
	})
	t.Run("authenticator-fails", func(t *testing.T) {
		pc, errc := connectAsync(t, newPeer(t), WithAuthenticator(failingAuth{}))
		pc.send(&packet.Auth{ReasonCode: packet.ContinueAuthentication, AuthMethod: "TEST"})
		err := <-errc
		if err == nil || !strings.Contains(err.Error(), "authenticate:") || !errors.Is(err, ErrAuthFailed) {
			t.Fatalf("Connect = %v, want an \"authenticate:\" ErrAuthFailed", err)
		}
	})
}
