package tern

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/ternmq/tern/packet"
)

// RedirectPolicy decides whether the client follows a server redirect: a CONNACK or
// DISCONNECT with reason 0x9C (use another server) or 0x9D (server moved) and a Server
// Reference (MQTT 5 §4.11). from is the broker that sent it, to the target as Tern resolved
// it. The policy is asked only about redirects that keep the transport's security: one that
// would lower it is refused before (see WithRedirectPolicy). It runs on the client's own
// goroutines, one call at a time, and must return quickly.
type RedirectPolicy func(from, to *url.URL) bool

// FollowRedirects follows every redirect that keeps the transport's security. The default.
func FollowRedirects(from, to *url.URL) bool { return true }

// IgnoreRedirects follows no redirect: the client stays with its configured brokers.
func IgnoreRedirects(from, to *url.URL) bool { return false }

// RedirectAllowList follows redirects only to the listed hosts: "host" allows any port of
// that host, "host:port" (or "[v6]:port") only that port. Host names compare without regard
// to case.
func RedirectAllowList(hosts ...string) RedirectPolicy {
	allowed := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		allowed[strings.ToLower(strings.Trim(h, "[]"))] = true
		if host, port, err := net.SplitHostPort(h); err == nil {
			allowed[net.JoinHostPort(strings.ToLower(host), port)] = true
		}
	}
	return func(_, to *url.URL) bool {
		host := strings.ToLower(to.Hostname())
		if host == "" {
			return false
		}
		return allowed[host] || (to.Port() != "" && allowed[net.JoinHostPort(host, to.Port())])
	}
}

// ErrRedirectRefused reports a server redirect the client did not follow because it would
// have lowered the transport's security (TLS to plain TCP, wss to ws, a network broker to a
// local socket). It reaches the WithOnConnectError callback and the log.
var ErrRedirectRefused = errors.New("tern: server redirect refused")

// secureTransport reports whether a scheme's transport protects what it carries: TLS, or a
// unix socket, which never leaves the host.
func secureTransport(scheme string) bool {
	switch scheme {
	case "mqtts", "tls", "ssl", "wss", "unix":
		return true
	}
	return false
}

// redirectSafe checks that following from's reference to to keeps the transport's security.
// Credentials go in CONNECT, so a TLS broker pointing at a plain one would otherwise make the
// client send them in clear.
func redirectSafe(from, to *url.URL) error {
	switch {
	case to.Scheme == "unix" && from.Scheme != "unix":
		return fmt.Errorf("%w: %s to %s: a network broker may not send the client to a local socket",
			ErrRedirectRefused, redact(from), redact(to))
	case secureTransport(from.Scheme) && !secureTransport(to.Scheme):
		return fmt.Errorf("%w: %s to %s would lower the transport's security",
			ErrRedirectRefused, redact(from), redact(to))
	}
	return nil
}

// allowRedirect applies the security rule and the user's policy to a redirect. A refusal for
// security is logged at warn level, counted and reported to the connect-error callback; one
// by policy is logged at info level and counted.
func (c *Client) allowRedirect(from, to *url.URL) bool {
	if err := redirectSafe(from, to); err != nil {
		if s := c.st; s != nil {
			s.RedirectsRefused.Add(1)
		}
		c.log.Warn("tern: server redirect refused", "err", err)
		if fn := c.cfg.onConnectErr; fn != nil {
			c.events.post(func() { fn(err) })
		}
		return false
	}
	if !c.cfg.redirectPolicy(from, to) {
		if s := c.st; s != nil {
			s.RedirectsRefused.Add(1)
		}
		c.log.Info("tern: server redirect not followed (policy)", "from", redact(from), "to", redact(to))
		return false
	}
	return true
}

// maxRedirects bounds how many server references one attempt follows.
const maxRedirects = 3

// dialAny tries the pending server redirect, if any, then the configured brokers in order
// from the current one, following the server references of refusing CONNACKs, and returns
// the first connection that completes its handshake. A redirect target that fails is
// forgotten: the same attempt goes on with the configured brokers.
func (c *Client) dialAny(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	brokers := slices.Clone(c.brokers)
	start, gen := c.brokerAt, c.brokersGen
	redirect, moved := c.redirect, c.redirectMoved
	c.redirect, c.redirectMoved = nil, false
	clean := c.cfg.cleanStart
	if c.connGen > 0 {
		clean = c.cfg.cleanOnReconnect
	}
	c.mu.Unlock()

	var errs []error
	if redirect != nil {
		cn, err := c.follow(ctx, gen, redirect, true, moved, clean)
		if err == nil {
			return cn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			return nil, errors.Join(errs...)
		}
		c.log.Warn("tern: redirect target failed, back to the configured brokers", "broker", redact(redirect))
	}
	for i := range brokers {
		idx := (start + i) % len(brokers)
		cn, err := c.follow(ctx, gen, brokers[idx], false, false, clean)
		if err == nil {
			c.mu.Lock()
			if c.brokersGen == gen {
				c.brokerAt = idx
			}
			c.mu.Unlock()
			return cn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil || !retryable(err) {
			break
		}
	}
	c.mu.Lock()
	if c.brokersGen == gen {
		c.brokerAt = (start + 1) % len(brokers) // rotate: the next round starts elsewhere
	}
	c.mu.Unlock()
	return nil, errors.Join(errs...)
}

// follow connects to u, following the server references of refusing CONNACKs up to
// maxRedirects hops and never back to a server this chain already tried (a loop ends the
// attempt, so the supervisor's backoff applies before the next). redirected marks u as a
// server's reference rather than a configured broker; moved, that it came from 0x9D. A
// connection reached through a permanent move (0x9D) is remembered as the first choice of
// later attempts, until an attempt to it fails, unless SetBrokers has replaced the list
// (generation gen) since the attempt began: the owner's list wins.
func (c *Client) follow(ctx context.Context, gen uint64, u *url.URL, redirected, moved, clean bool) (*conn, error) {
	tried := []string{u.String()}
	for hop := 0; ; hop++ {
		cn, err := c.dialConn(ctx, u, clean, redirected)
		if err == nil {
			cn.listGen = gen
			if moved {
				c.mu.Lock()
				if c.brokersGen == gen {
					c.redirect, c.redirectMoved = u, true
				}
				c.mu.Unlock()
			}
			return cn, nil
		}
		c.connectFailed(u, err)
		next, code := c.referral(u, err)
		if next == nil {
			return nil, err
		}
		if hop == maxRedirects || slices.Contains(tried, next.String()) {
			c.log.Warn("tern: server redirects loop or chain too long; not followed", "broker", redact(u),
				"to", redact(next))
			return nil, err
		}
		tried = append(tried, next.String())
		u, redirected, moved = next, true, code == packet.ServerMoved
	}
}

func (c *Client) connectFailed(u *url.URL, err error) {
	if s := c.st; s != nil {
		s.ConnectErrors.Add(1)
	}
	c.log.Warn("tern: connect failed", "broker", redact(u), "err", err)
	if fn := c.cfg.onConnectErr; fn != nil {
		c.events.post(func() { fn(err) })
	}
}

// referral returns the server a refused CONNECT points to (0x9C use another server, 0x9D
// server moved, with a Server Reference) and the code, or nil when there is none or the
// client does not follow it.
func (c *Client) referral(from *url.URL, err error) (*url.URL, packet.ReasonCode) {
	var rc *ReasonCodeError
	if !errors.As(err, &rc) || rc.ServerReference == "" {
		return nil, 0
	}
	if rc.Code != packet.UseAnotherServer && rc.Code != packet.ServerMoved {
		return nil, 0
	}
	u, perr := resolveReference(from, rc.ServerReference)
	if perr != nil {
		c.log.Warn("tern: unusable server reference", "reference", rc.ServerReference, "err", perr)
		return nil, 0
	}
	if !c.allowRedirect(from, u) {
		return nil, 0
	}
	return u, rc.Code
}

// resolveReference turns a Server Reference into a broker URL. The specification leaves its
// format open; Tern accepts a URL, or host[:port] taking the scheme (so TLS stays TLS) and,
// without a port, the port of the broker that sent it. A space-separated list names
// alternatives: the first is used. Nothing else of the sender's URL carries over: no user
// information, no query.
func resolveReference(from *url.URL, ref string) (*url.URL, error) {
	ref, _, _ = strings.Cut(strings.TrimSpace(ref), " ")
	if strings.Contains(ref, "://") {
		return parseBroker(ref)
	}
	host, port, err := net.SplitHostPort(ref)
	if err != nil {
		host, port = strings.Trim(ref, "[]"), from.Port()
	}
	u := url.URL{Scheme: from.Scheme, Host: host, Path: from.Path}
	if port != "" {
		u.Host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		u.Host = "[" + host + "]"
	}
	return parseBroker(u.String())
}

// noteRedirect remembers a server reference from a broker's DISCONNECT for the next attempt:
// for that attempt only with 0x9C, as the first choice until it fails with 0x9D.
func (c *Client) noteRedirect(cn *conn, d *packet.Disconnect) {
	if d.ServerReference == "" || (d.ReasonCode != packet.UseAnotherServer && d.ReasonCode != packet.ServerMoved) {
		return
	}
	u, err := resolveReference(cn.broker, d.ServerReference)
	if err != nil {
		c.log.Warn("tern: unusable server reference", "reference", d.ServerReference, "err", err)
		return
	}
	if !c.allowRedirect(cn.broker, u) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.brokersGen != cn.listGen {
		// SetBrokers replaced the list this connection was made under: the owner's list wins.
		c.log.Info("tern: server reference not followed: the broker list changed since this connection was made",
			"reference", redact(u))
		return
	}
	c.redirect, c.redirectMoved = u, d.ReasonCode == packet.ServerMoved
}
