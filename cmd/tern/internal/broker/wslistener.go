package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsSubprotocol is the WebSocket sub-protocol MQTT is carried under [MQTT-6.0.0-3].
const wsSubprotocol = "mqtt"

// wsListener is a mochi listener for MQTT over WebSocket (MQTT 5 §6), on any request path.
// mochi's own (listeners.Websocket) binds only when it starts serving, so neither a port
// chosen by the system nor a bind error is known to the caller, and it does not close the
// connections it upgraded; this one binds in Init, tracks its connections like listener, and
// waits for every goroutine it starts.
type wsListener struct {
	id, addr  string
	tlsConfig *tls.Config     // wss when set
	goodbye   func(id string) // sayGoodbye for its server
	ln        net.Listener
	srv       *http.Server
	establish listeners.EstablishFn
	wg        sync.WaitGroup // Serve and the handlers of upgraded connections
	conns     connSet
}

var _ listeners.Listener = (*wsListener)(nil)

func newWSListener(id, addr string, tlsConfig *tls.Config, goodbye func(string)) *wsListener {
	return &wsListener{id: id, addr: addr, tlsConfig: tlsConfig, goodbye: goodbye}
}

// wsConn is an upgraded connection as the byte stream mochi reads and writes.
type wsConn struct {
	net.Conn
	ws *websocket.Conn
}

// Close ends the connection at once, without the WebSocket closing handshake, which would
// wait for a client that may have stopped reading.
func (c *wsConn) Close() error {
	err := c.ws.CloseNow()
	c.Conn.Close() // stops NetConn's deadline timers
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (l *wsListener) ID() string { return l.id }

func (l *wsListener) Protocol() string {
	if l.tlsConfig != nil {
		return "wss"
	}
	return "ws"
}

func (l *wsListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init binds the address; Serve is counted from here, so wait cannot miss it.
func (l *wsListener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	if l.tlsConfig != nil {
		ln = tls.NewListener(ln, l.tlsConfig)
	}
	l.ln = ln
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: 10 * time.Second, // a client that never finishes its handshake
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	l.wg.Add(1)
	return nil
}

// Serve serves HTTP until Close; mochi runs it on a goroutine of its own.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	defer l.wg.Done()
	l.establish = establish // before the first request: handlers start from Serve below
	l.srv.Serve(l.ln)       // returns http.ErrServerClosed after Close
}

// ServeHTTP upgrades one request and hands the connection to mochi until the client leaves.
// A request without the WebSocket upgrade gets an HTTP error from websocket.Accept. The
// Origin check stays on: a web page on another site must not reach an unauthenticated
// broker through a visitor's browser (clients outside browsers send no Origin).
func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !l.conns.enter(&l.wg) {
		http.Error(w, "broker closing", http.StatusServiceUnavailable)
		return
	}
	defer l.wg.Done()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{wsSubprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return // Accept has answered the request
	}
	// The connection lives until the client or Close ends it, not as long as the request's
	// context: NetConn reads frames as one byte stream, with no message size limit.
	nc := &wsConn{Conn: websocket.NetConn(context.Background(), c, websocket.MessageBinary), ws: c}
	h := l.conns.add(nc)
	if h == nil {
		nc.Close()
		return
	}
	l.establish(l.id, h) // its error only says why the client left
	l.conns.remove(h)
	h.Close()
}

// Close stops accepting, disconnects the clients mochi knows (goodbye, as the TCP listener
// does), then closes whatever connection is left, and returns once mochi has counted every
// connection handed to it (listener.Close).
func (l *wsListener) Close(listeners.CloseFn) {
	if l.conns.markClosed() {
		return
	}
	l.srv.Close()
	l.goodbye(l.id)
	l.closeAll()
	l.conns.awaitAttached()
}

// closeAll stops accepting and closes every connection now: upgraded connections are
// hijacked from the HTTP server, which no longer closes them.
func (l *wsListener) closeAll() {
	l.conns.markClosed()
	if l.srv != nil {
		l.srv.Close() // its error only says the listener was closed already
	}
	l.conns.closeAll()
}

// wait waits for Serve and every handler.
func (l *wsListener) wait() { l.wg.Wait() }
