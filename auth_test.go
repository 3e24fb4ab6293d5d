package tern

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/scramtest"
	"github.com/ternmq/tern/packet"
	"github.com/ternmq/tern/scram"
)

// serveScram plays the broker's side of a SCRAM exchange started by CONNECT (or AUTH 0x19)
// carrying clientFirst, and returns the server-final data, or an error for a bad proof.
func serveScram(t *testing.T, pc *peerConn, srv *scramtest.Server, clientFirst []byte) (string, error) {
	t.Helper()
	sf, err := srv.First(string(clientFirst))
	if err != nil {
		return "", err
	}
	pc.send(&packet.Auth{ReasonCode: packet.ContinueAuthentication, AuthMethod: scram.Method, AuthData: []byte(sf)})
	a, ok := pc.read().(*packet.Auth)
	if !ok || a.ReasonCode != packet.ContinueAuthentication || a.AuthMethod != scram.Method {
		t.Fatalf("expected AUTH continue, got %+v", a)
	}
	return srv.Final(string(a.AuthData))
}

func TestEnhancedAuthAndReauth(t *testing.T) {
	srv := &scramtest.Server{User: "alice", Password: "pw", Salt: []byte("salt"), Iterations: 4096}
	p := newPeer(t)
	c, err := New(WithBroker(p.url()), WithAuthenticator(scram.New("alice", "pw")))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc := p.accept()
	cp := pc.read().(*packet.Connect)
	if cp.AuthMethod != scram.Method {
		t.Fatalf("CONNECT method %q", cp.AuthMethod)
	}
	final, err := serveScram(t, pc, srv, cp.AuthData)
	if err != nil {
		t.Fatal(err)
	}
	pc.send(&packet.Connack{AuthMethod: scram.Method, AuthData: []byte(final)})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })

	// Re-authentication mid-session: the client starts with AUTH 0x19.
	go func() { errc <- c.Reauthenticate(testCtx(t)) }()
	a := pc.read().(*packet.Auth)
	if a.ReasonCode != packet.ReAuthenticate || a.AuthMethod != scram.Method {
		t.Fatalf("got %+v, want AUTH re-authenticate", a)
	}
	final, err = serveScram(t, pc, srv, a.AuthData)
	if err != nil {
		t.Fatal(err)
	}
	pc.send(&packet.Auth{ReasonCode: packet.Success, AuthMethod: scram.Method, AuthData: []byte(final)})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !c.Connected() {
		t.Fatal("connection lost by re-authentication")
	}
}

// A wrong password ends Connect with the broker's refusal at once: no retry storm.
func TestEnhancedAuthWrongPassword(t *testing.T) {
	srv := &scramtest.Server{User: "alice", Password: "right", Salt: []byte("salt"), Iterations: 4096}
	p := newPeer(t)
	c, err := New(WithBroker(p.url()), WithAuthenticator(scram.New("alice", "wrong")))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc := p.accept()
	cp := pc.read().(*packet.Connect)
	if _, err := serveScram(t, pc, srv, cp.AuthData); err == nil {
		t.Fatal("server accepted a wrong password")
	}
	pc.send(&packet.Connack{ReasonCode: packet.NotAuthorized, ReasonString: "bad proof"})
	err = <-errc
	var rc *ReasonCodeError
	if !errors.As(err, &rc) || rc.Code != packet.NotAuthorized {
		t.Fatalf("got %v, want not authorized", err)
	}
	if retryable(err) {
		t.Fatal("an authentication refusal must not be retried like a network error")
	}
	select {
	case <-p.conns:
		t.Fatal("the client tried again")
	case <-time.After(200 * time.Millisecond):
	}
}

// A broker that cannot prove it knows the password is refused by the client.
func TestEnhancedAuthForgedServer(t *testing.T) {
	srv := &scramtest.Server{User: "alice", Password: "pw", Salt: []byte("salt"), Iterations: 4096}
	p := newPeer(t)
	c, err := New(WithBroker(p.url()), WithAuthenticator(scram.New("alice", "pw")))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc := p.accept()
	cp := pc.read().(*packet.Connect)
	if _, err := serveScram(t, pc, srv, cp.AuthData); err != nil {
		t.Fatal(err)
	}
	pc.send(&packet.Connack{AuthMethod: scram.Method, AuthData: []byte("v=Zm9yZ2Vk")})
	if err := <-errc; !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("got %v, want ErrAuthFailed", err)
	}
}

// WithConnectPacketBuilder runs before every CONNECT: credentials rotate across reconnects.
func TestConnectPacketBuilderRotates(t *testing.T) {
	p := newPeer(t)
	var n atomic.Int32
	c, err := New(WithBroker(p.url()), WithReconnectBackoff(ConstantBackoff(time.Millisecond)),
		WithConnectPacketBuilder(func(_ context.Context, cp *packet.Connect) error {
			cp.Username = "svc"
			cp.Password = []byte{'t', byte('0' + n.Add(1))}
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(testCtx(t)) }()
	pc, cp := p.handshake(&packet.Connack{})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	if string(cp.Password) != "t1" {
		t.Fatalf("first password %q", cp.Password)
	}
	pc.nc.Close()
	_, cp2 := p.handshake(&packet.Connack{})
	if string(cp2.Password) != "t2" || cp2.Username != "svc" {
		t.Fatalf("second CONNECT %q %q, want rotated credentials", cp2.Username, cp2.Password)
	}
}
