package tern

import (
	"context"
	"errors"
	"fmt"
	"net"

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

// WithAuthenticator turns on enhanced authentication with a.
func WithAuthenticator(a Authenticator) Option {
	return func(c *config) error {
		if a == nil || a.Method() == "" {
			return fmt.Errorf("%w: authenticator without a method", ErrInvalidOption)
		}
		if err := packet.ValidString(a.Method()); err != nil {
			return fmt.Errorf("%w: authentication method: %w", ErrInvalidOption, err)
		}
		c.auth = a
		return nil
	}
}

// WithConnectPacketBuilder sets a function that may change each CONNECT just before it is
// sent, on every connection attempt: the place to rotate a token or password. An error aborts
// that attempt (the supervisor tries again later). The packet is validated after fn returns.
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
