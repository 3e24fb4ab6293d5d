package tern

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
)

// dialBroker opens the byte stream for one broker URL. TLS uses the configured tls.Config
// (never loosened); its server name is the configured one, or the URL's host. For a server's
// redirect (redirected) it is always the target's host: the certificate must name the server
// the client was sent to, not the one it was configured for.
func (c *config) dialBroker(ctx context.Context, u *url.URL, redirected bool) (net.Conn, error) {
	if c.dial != nil {
		return c.dial(ctx, u)
	}
	switch u.Scheme {
	case "mqtt", "tcp":
		return c.dialer.DialContext(ctx, "tcp", hostPort(u, "1883"))
	case "mqtts", "tls", "ssl":
		cfg := &tls.Config{}
		if c.tlsConfig != nil {
			cfg = c.tlsConfig.Clone()
		}
		if redirected || (cfg.ServerName == "" && !cfg.InsecureSkipVerify) {
			cfg.ServerName = u.Hostname()
		}
		d := tls.Dialer{NetDialer: c.dialer, Config: cfg}
		return d.DialContext(ctx, "tcp", hostPort(u, "8883"))
	case "unix":
		path := u.Path
		if path == "" {
			path = u.Opaque
		}
		return c.dialer.DialContext(ctx, "unix", path)
	}
	return nil, fmt.Errorf("%w: scheme %q needs WithDialFunc (the ws module provides one)", ErrInvalidOption, u.Scheme)
}

func hostPort(u *url.URL, defPort string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), defPort)
}

// redact returns the URL as a string without any password it carries, for logs.
func redact(u *url.URL) string { return u.Redacted() }
