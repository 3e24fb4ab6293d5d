package tern

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
)

// Transport opens the byte stream to a broker for URL schemes the client does not serve
// itself. The ws module provides one for ws:// and wss://; give it to New with WithTransport.
// Dial is called by the supervisor, one dial at a time per client, and must honour ctx (the
// connect timeout and the caller's context end it). The returned net.Conn must support
// deadlines: the client uses them to bound the handshake and to free a stuck write.
type Transport interface {
	// Schemes lists the URL schemes the transport serves, such as "ws" and "wss".
	Schemes() []string
	// Dial opens a connection to broker.
	Dial(ctx context.Context, broker *url.URL, env DialEnv) (net.Conn, error)
}

// DialEnv is what the client hands a Transport for one dial, so that every transport
// follows the same TLS and dialing rules as the built-in ones.
type DialEnv struct {
	// TLSConfig is set for a scheme that carries TLS (wss): a clone of the WithTLSConfig
	// config (an empty one without it), with ServerName set to the broker's host unless the
	// configuration names one, and always to the host for a server's redirect. Nil for a
	// plain scheme (ws). The transport may change it.
	TLSConfig *tls.Config
	// Dialer is the WithDialer dialer (by default a net.Dialer with TCP keepalive off), for
	// the TCP connection underneath. It must not be changed.
	Dialer *net.Dialer
	// Redirected reports that broker is a server's reference (0x9C/0x9D), not a broker
	// from the configuration.
	Redirected bool
}

// WithTransport adds a transport for the URL schemes it lists (see Transport), replacing any
// transport given earlier for the same scheme. WithDialFunc, when set, takes precedence over
// every transport. Default: none; ws:// and wss:// brokers need one.
func WithTransport(t Transport) Option {
	return func(c *config) error {
		if t == nil || len(t.Schemes()) == 0 {
			return fmt.Errorf("%w: WithTransport needs a transport with at least one scheme", ErrInvalidOption)
		}
		if c.transports == nil {
			c.transports = make(map[string]Transport)
		}
		for _, s := range t.Schemes() {
			c.transports[s] = t
		}
		return nil
	}
}

// checkTransport reports a broker URL that nothing configured can dial: today a ws:// or
// wss:// URL without a WebSocket transport.
func (c *config) checkTransport(u *url.URL) error {
	if c.dial != nil || c.transports[u.Scheme] != nil {
		return nil
	}
	switch u.Scheme {
	case "ws", "wss":
		return fmt.Errorf("%w: broker %s: scheme %q needs the WebSocket transport: import "+
			"github.com/ternmq/tern/ws and pass tern.WithTransport(ws.New()) to New",
			ErrInvalidOption, redact(u), u.Scheme)
	}
	return nil
}

// tlsFor returns the TLS config for one dial of u: the configured one (never loosened),
// cloned; its server name is the configured one, or the URL's host. For a server's redirect
// it is always the target's host: the certificate must name the server the client was sent
// to, not the one it was configured for.
func (c *config) tlsFor(u *url.URL, redirected bool) *tls.Config {
	cfg := &tls.Config{}
	if c.tlsConfig != nil {
		cfg = c.tlsConfig.Clone()
	}
	if redirected || (cfg.ServerName == "" && !cfg.InsecureSkipVerify) {
		cfg.ServerName = u.Hostname()
	}
	return cfg
}

// dialBroker opens the byte stream for one broker URL: WithDialFunc if set, else a built-in
// transport, else one given with WithTransport. redirected marks a server's reference.
func (c *config) dialBroker(ctx context.Context, u *url.URL, redirected bool) (net.Conn, error) {
	if c.dial != nil {
		return c.dial(ctx, u)
	}
	switch u.Scheme {
	case "mqtt", "tcp":
		return c.dialer.DialContext(ctx, "tcp", hostPort(u, "1883"))
	case "mqtts", "tls", "ssl":
		d := tls.Dialer{NetDialer: c.dialer, Config: c.tlsFor(u, redirected)}
		return d.DialContext(ctx, "tcp", hostPort(u, "8883"))
	case "unix":
		path := u.Path
		if path == "" {
			path = u.Opaque
		}
		return c.dialer.DialContext(ctx, "unix", path)
	}
	if t := c.transports[u.Scheme]; t != nil {
		env := DialEnv{Dialer: c.dialer, Redirected: redirected}
		if secureTransport(u.Scheme) {
			env.TLSConfig = c.tlsFor(u, redirected)
		}
		return t.Dial(ctx, u, env)
	}
	if err := c.checkTransport(u); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: scheme %q has no transport", ErrInvalidOption, u.Scheme)
}

func hostPort(u *url.URL, defPort string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), defPort)
}

// redact returns the URL as a string without any password it carries, for logs.
func redact(u *url.URL) string { return u.Redacted() }
