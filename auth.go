package tern

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/ternmq/tern/packet"
)

// Authenticator runs enhanced authentication (MQTT 5 §4.12): a challenge/response exchange
// named by an authentication method, carried by CONNECT, AUTH and CONNACK. The client calls
// its methods one exchange at a time, never concurrently; Start begins a new exchange and
// resets any state of the previous one.
type Authenticator interface {
	// Method is the Authentication Method, such as "SCRAM-SHA-256".
	Method() string
	// Start returns the initial Authentication Data, sent in CONNECT (or in AUTH with
	// reason 0x19 for re-authentication). nil sends none.
	Start(ctx context.Context) ([]byte, error)
	// Continue answers the broker's challenge (AUTH 0x18) with the next data.
	Continue(ctx context.Context, challenge []byte) ([]byte, error)
	// Done receives the data of the broker's final answer (CONNACK or AUTH with success),
	// for example to check the broker's own proof. An error aborts the connection.
	Done(ctx context.Context, data []byte) error
}

// WithAuthenticator turns on enhanced authentication with a. Every connection the option
// configures uses a: the main connection, each publisher pool member (WithPublisherPool) and
// every client given this same Option value (ClientGroup's WithGroupOptions). Their exchanges
// run one at a time, as the Authenticator contract promises: a connection that needs one
// while another runs waits for it in Start, bounded by its connect timeout.
func WithAuthenticator(a Authenticator) Option {
	var x *exclusiveAuth
	if a != nil {
		x = &exclusiveAuth{a: a, turn: make(chan struct{}, 1)}
	}
	return func(c *config) error {
		if a == nil || a.Method() == "" {
			return fmt.Errorf("%w: authenticator without a method", ErrInvalidOption)
		}
		if err := packet.ValidString(a.Method()); err != nil {
			return fmt.Errorf("%w: authentication method: %w", ErrInvalidOption, err)
		}
		c.auth = x
		return nil
	}
}

// errAuthTurn is the error of a call from an exchange that is no longer the running one.
var errAuthTurn = errors.New("tern: authentication exchange already ended")

// exclusiveAuth runs the exchanges of several connections on one Authenticator one at a time.
// An exchange holds turn from Start until Done returns, Start or Continue fails, end is
// called, or the ctx given to Start ends (the handshake's ctx ends with its attempt). Calls
// are matched to the running exchange by their ctx, which the client passes unchanged from
// Start to Continue and Done.
type exclusiveAuth struct {
	a    Authenticator
	turn chan struct{} // one slot: full while an exchange runs

	mu      sync.Mutex
	cur     context.Context // ctx of the running exchange, nil when none
	release func()          // ends the running exchange
}

func (x *exclusiveAuth) Method() string { return x.a.Method() }

func (x *exclusiveAuth) Start(ctx context.Context) ([]byte, error) {
	select {
	case x.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			x.mu.Lock()
			if x.cur == ctx {
				x.cur, x.release = nil, nil
			}
			x.mu.Unlock()
			<-x.turn
		})
	}
	x.mu.Lock()
	x.cur = ctx
	x.mu.Unlock()
	stop := context.AfterFunc(ctx, release)
	x.mu.Lock()
	if x.cur == ctx { // else ctx ended already and release ran
		x.release = func() { stop(); release() }
	}
	x.mu.Unlock()
	data, err := x.a.Start(ctx)
	if err != nil {
		x.end(ctx)
	}
	return data, err
}

// running returns the release of the exchange ctx started, or nil when it has ended.
func (x *exclusiveAuth) running(ctx context.Context) func() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.cur != ctx {
		return nil
	}
	return x.release // nil when ctx ended as the exchange began
}

func (x *exclusiveAuth) Continue(ctx context.Context, challenge []byte) ([]byte, error) {
	release := x.running(ctx)
	if release == nil {
		return nil, errAuthTurn
	}
	data, err := x.a.Continue(ctx, challenge)
	if err != nil {
		release()
	}
	return data, err
}

func (x *exclusiveAuth) Done(ctx context.Context, data []byte) error {
	release := x.running(ctx)
	if release == nil {
		return errAuthTurn
	}
	defer release()
	return x.a.Done(ctx, data)
}

// end ends the exchange ctx started, if it still runs: for exchanges that stop without a
// final call (Reauthenticate with a ctx that never ends).
func (x *exclusiveAuth) end(ctx context.Context) {
	if release := x.running(ctx); release != nil {
		release()
	}
}

// WithConnectPacketBuilder sets a function that may change each CONNECT just before it is
// sent, on every connection attempt: the place to rotate a token or password. An error aborts
// that attempt (the supervisor tries again later). The packet is validated after fn returns.
// With WithPublisherPool, fn also runs for the members' connections, possibly concurrently
// (see WithPublisherPool for what a member keeps of its own).
func WithConnectPacketBuilder(fn func(ctx context.Context, p *packet.Connect) error) Option {
	return func(c *config) error { c.connectBuilder = fn; return nil }
}

// ErrAuthFailed reports an enhanced authentication exchange that the client itself gave up:
// the authenticator returned an error or the broker answered out of turn.
var ErrAuthFailed = errors.New("tern: authentication failed")

var errAuthUnasked = &packet.Error{Code: packet.ProtocolError, Rule: "MQTT-4.12.0-6",
	Detail: "AUTH without enhanced authentication"}

var errAuthMethod = &packet.Error{Code: packet.ProtocolError, Detail: "AUTH with a different authentication method"}

// authStep answers one AUTH packet from the broker during an exchange: a challenge gets the
// authenticator's response; anything else is a protocol error.
func authStep(ctx context.Context, a Authenticator, in *packet.Auth) (*packet.Auth, error) {
	if in.AuthMethod != a.Method() {
		return nil, errAuthMethod
	}
	if in.ReasonCode != packet.ContinueAuthentication {
		return nil, &packet.Error{Code: packet.ProtocolError, Detail: "AUTH " + in.ReasonCode.String() + " during an exchange"}
	}
	data, err := a.Continue(ctx, in.AuthData)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAuthFailed, err)
	}
	return &packet.Auth{ReasonCode: packet.ContinueAuthentication, AuthMethod: a.Method(), AuthData: data}, nil
}

// handshakeAuth handles an AUTH read while waiting for CONNACK.
func (c *Client) handshakeAuth(ctx context.Context, nc net.Conn, f *packet.Frame) error {
	var in packet.Auth
	err := in.Decode(f.Flags(), f.Body)
	f.Release()
	if err != nil {
		return err
	}
	out, err := authStep(ctx, c.cfg.auth, &in)
	if err != nil {
		return err
	}
	_, err = nc.Write(out.AppendTo(nil))
	return err
}

// Reauthenticate runs a new enhanced authentication exchange on the live connection
// (MQTT 5 §4.12.1), for example before a credential expires. Publishing and receiving go on
// meanwhile. It returns when the broker answers with success, and fails if the client has no
// Authenticator, is not connected, or the broker refuses (it then closes the connection).
func (c *Client) Reauthenticate(ctx context.Context) error {
	a := c.cfg.auth
	if a == nil {
		return fmt.Errorf("%w: no authenticator", ErrInvalidOption)
	}
	c.reauthMu.Lock() // one exchange at a time
	defer c.reauthMu.Unlock()
	cn, err := c.waitConn(ctx)
	if err != nil {
		return err
	}
	data, err := a.Start(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAuthFailed, err)
	}
	if x, ok := a.(*exclusiveAuth); ok {
		defer x.end(ctx)
	}
	ch := make(chan *packet.Auth, 1)
	cn.authMu.Lock()
	cn.authCh = ch
	cn.authMu.Unlock()
	defer func() {
		cn.authMu.Lock()
		cn.authCh = nil
		cn.authMu.Unlock()
	}()
	out := &packet.Auth{ReasonCode: packet.ReAuthenticate, AuthMethod: a.Method(), AuthData: data}
	for {
		if err := cn.w.sendUrgent(out.AppendTo(nil)); err != nil {
			return err
		}
		var in *packet.Auth
		select {
		case in = <-ch:
		case <-cn.closing:
			return fmt.Errorf("re-authenticate: %w", cn.reason())
		case <-ctx.Done():
			return ctx.Err()
		}
		if in.ReasonCode == packet.Success {
			if in.AuthMethod != a.Method() {
				cn.closeWith(packet.ProtocolError, errAuthMethod)
				return errAuthMethod
			}
			if err := a.Done(ctx, in.AuthData); err != nil {
				err = fmt.Errorf("%w: %w", ErrAuthFailed, err)
				cn.closeWith(packet.NotAuthorized, err)
				return err
			}
			return nil
		}
		if out, err = authStep(ctx, a, in); err != nil {
			code := packet.ProtocolError
			if errors.Is(err, ErrAuthFailed) {
				code = packet.NotAuthorized
			}
			cn.closeWith(code, err)
			return err
		}
	}
}

// handleAuth routes an AUTH read on a live connection to the re-authentication in progress.
// Only the client starts an exchange, and it waits for each answer before it speaks again,
// so a second AUTH in a row is out of turn.
func (cn *conn) handleAuth(a *packet.Auth) error {
	cn.authMu.Lock()
	ch := cn.authCh
	cn.authMu.Unlock()
	if ch == nil {
		return &packet.Error{Code: packet.ProtocolError, Detail: "AUTH with no re-authentication in progress"}
	}
	select {
	case ch <- a:
		return nil
	default:
		return &packet.Error{Code: packet.ProtocolError, Detail: "AUTH out of turn"}
	}
}
