// Package ws carries MQTT over WebSocket (MQTT 5 §6) for the tern client, on
// github.com/coder/websocket. Give the transport to New and use ws:// and wss:// broker URLs
// like any other, failover lists and server redirects included:
//
//	c, err := tern.New(
//		tern.WithBrokers("wss://broker.example/mqtt", "mqtts://backup.example"),
//		tern.WithTransport(ws.New(ws.WithHeader(http.Header{"Authorization": {"Bearer " + tok}}))),
//	)
//
// The handshake offers the sub-protocol "mqtt" [MQTT-6.0.0-3]. Every write of the client is
// one binary frame (the client batches, so a frame often holds several packets); frames are
// read as one byte stream, so a packet may span frames and a frame may hold several packets
// [MQTT-6.0.0-2]. A text frame ends the connection [MQTT-6.0.0-1].
//
// wss:// uses the client's WithTLSConfig, with the server name taken from the URL's host
// (also after an HTTP redirect of the handshake, and for a server's MQTT redirect), and the
// client's WithDialer for the TCP connection. Proxies come from the environment
// (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) unless WithProxy says otherwise.
package ws

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/coder/websocket"
	"github.com/ternmq/tern"
)

// Subprotocol is the WebSocket sub-protocol MQTT is carried under [MQTT-6.0.0-3].
const Subprotocol = "mqtt"

// maxRedirects bounds the HTTP redirects one handshake follows.
const maxRedirects = 5

// Transport dials brokers over WebSocket; it serves the schemes ws and wss. Make one with
// New. It is safe for concurrent use and may be shared by several clients.
type Transport struct {
	header http.Header
	proxy  func(*http.Request) (*url.URL, error)
}

// Option configures a Transport.
type Option func(*Transport)

// WithHeader adds HTTP headers to every handshake request (authentication, cookies, an
// Origin). Default: none. The headers the WebSocket handshake needs are set by the transport.
// They go to the host of the broker URL only: an HTTP redirect of the handshake to another
// host is followed without them.
func WithHeader(h http.Header) Option {
	return func(t *Transport) { t.header = h.Clone() }
}

// WithProxy sets how the handshake finds its HTTP proxy, as http.Transport.Proxy does: a
// function returning the proxy URL for a request, or nil for none. Default:
// http.ProxyFromEnvironment. ws:// goes through the proxy as an HTTP request, wss:// as a
// CONNECT tunnel; proxy credentials go in the proxy URL's user information.
func WithProxy(fn func(*http.Request) (*url.URL, error)) Option {
	return func(t *Transport) {
		if fn == nil {
			fn = func(*http.Request) (*url.URL, error) { return nil, nil }
		}
		t.proxy = fn
	}
}

// New returns a WebSocket transport for tern.WithTransport.
func New(opts ...Option) *Transport {
	t := &Transport{proxy: http.ProxyFromEnvironment}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Schemes returns ws and wss.
func (t *Transport) Schemes() []string { return []string{"ws", "wss"} }

// Dial opens a WebSocket connection to broker and returns it as a byte stream. The client
// calls it; ctx bounds the TCP connection, the TLS handshake and the HTTP upgrade.
func (t *Transport) Dial(ctx context.Context, broker *url.URL, env tern.DialEnv) (net.Conn, error) {
	tlsConfig := env.TLSConfig
	if tlsConfig != nil && tlsConfig.ServerName == broker.Hostname() {
		// Leave the name to net/http, which takes it from each request's host: after an
		// HTTP redirect the certificate must name the server the handshake was sent to.
		tlsConfig = tlsConfig.Clone()
		tlsConfig.ServerName = ""
	}
	dialer := env.Dialer
	if dialer == nil {
		dialer = &net.Dialer{}
	}
	hc := &http.Transport{
		Proxy:               t.proxy,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 0, // ctx bounds it
		DisableKeepAlives:   true,
		ForceAttemptHTTP2:   false, // the upgrade needs HTTP/1.1
	}
	defer hc.CloseIdleConnections()
	if tlsConfig == nil {
		// A ws:// URL redirected to https:// still verifies the server, by host name.
		hc.TLSClientConfig = &tls.Config{}
	}
	client := &http.Client{Transport: hc, CheckRedirect: t.checkRedirect}
	c, resp, err := websocket.Dial(ctx, broker.String(), &websocket.DialOptions{
		HTTPClient:      client,
		HTTPHeader:      t.header,
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("websocket handshake: HTTP %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	// The connection outlives ctx, which only bounds the dial: its reads and writes are
	// bounded by the deadlines the client sets and by Close.
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	return &conn{Conn: nc, ws: c}, nil
}

// checkRedirect follows at most maxRedirects HTTP redirects of the handshake, and none from
// TLS to plain HTTP: a redirect must not lower the transport's security (the same rule the
// client applies to MQTT server redirects). A redirect to another host goes without the
// WithHeader headers: any of them may carry a credential, and that host is not the one the
// user named (net/http itself drops only Authorization, Cookie and WWW-Authenticate).
func (t *Transport) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("ws: more than %d redirects", maxRedirects)
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return errors.New("ws: redirect from wss to an insecure URL refused")
	}
	if !strings.EqualFold(req.URL.Hostname(), via[0].URL.Hostname()) {
		for k := range t.header {
			req.Header.Del(k)
		}
	}
	return nil
}

// conn is the byte stream over one WebSocket.
type conn struct {
	net.Conn
	ws *websocket.Conn
}

// Read reads the byte stream. The peer ending the WebSocket, by a close frame of any status or
// by dropping the TCP connection, reads as the end of the stream (an error matching io.EOF,
// the close status kept in its text), as a TCP close does: the client tells a broker that
// hung up from other failures by it (a 3.1.1-only broker closing on a level-5 CONNECT, for
// MQTT5Fallback311).
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && err != io.EOF && (errors.Is(err, io.EOF) || websocket.CloseStatus(err) != -1) {
		err = fmt.Errorf("%w (%w)", io.EOF, err)
	}
	return n, err
}

// Close ends the connection at once, without the WebSocket closing handshake: MQTT's
// DISCONNECT has already said what there was to say, and a handshake with a peer that stopped
// reading would hold Close for seconds. Safe to call more than once and from any goroutine.
func (c *conn) Close() error {
	err := c.ws.CloseNow()
	c.Conn.Close() // stops the deadline timers; the WebSocket is already closed
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
