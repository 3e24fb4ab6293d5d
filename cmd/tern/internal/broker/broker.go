// Package broker runs an embedded MQTT broker (mochi-mqtt server v2) for the tern command:
// loopback TCP, anonymous access, and sessions kept across Restart.
//
// mochi cannot serve again once closed, so Restart builds a new mochi server on the same
// address. Sessions, subscriptions, in-flight QoS 1/2 exchanges and retained messages live
// in a storage hook owned by the Broker (memStore) rather than in the mochi server, and
// every new server loads them at start: a client that reconnects after Restart with Clean
// Start 0 finds its session, as it would after a restart of a broker with persistence.
//
// With Options.PersistDir that state is also written to a snapshot file every
// Options.SaveInterval and on Close, and loaded by Start. This is not crash-safe
// persistence: a crash loses what changed since the last save.
package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Options configure a Broker. The zero value is usable.
type Options struct {
	// MaxInflight is the Receive Maximum the broker grants each client: how many QoS 1/2
	// publishes a client may have unacknowledged toward the broker. 0: mochi's default
	// (1024).
	MaxInflight uint16
	// PersistDir, when set, is where the broker state is saved (see the package comment).
	PersistDir string
	// SaveInterval is how often changed state is saved to PersistDir. Default: 1 s.
	SaveInterval time.Duration
	// Logger receives mochi's log. Default: discard.
	Logger *slog.Logger
	// CloseGrace bounds how long Close lets mochi say goodbye to its clients before it
	// closes their connections itself. Default: 2 s.
	CloseGrace time.Duration
	// AbandonAfter bounds how long Close then waits for mochi's goroutines to end once their
	// connections are closed (they finish their pending writes, which fail at once: seconds
	// under load) before it leaves them behind and returns ErrCloseAbandoned. Default: 30 s.
	AbandonAfter time.Duration
	// WSAddr, when set, is a second listener for MQTT over WebSocket (ws://WSAddr/ on any
	// path; host:port, port 0 picks a free one), kept across Restart like the TCP one.
	// Default: none.
	WSAddr string
	// WSTLSConfig, when set with WSAddr, makes that listener wss (tests of wss clients).
	WSTLSConfig *tls.Config
	// Hooks are extra mochi hooks added to every mochi server the Broker builds (Start and
	// each Restart), after its own: observers for tests and diagnostics. A hook must be safe
	// for concurrent use; mochi calls hooks on its client goroutines, so a hook that blocks
	// stalls that client (tests do it on purpose to force an interleaving).
	// Init is called once per server. Default: none.
	Hooks []mqtt.Hook
}

// Broker is an embedded mochi broker on one address. Its methods are safe for concurrent
// use.
type Broker struct {
	opts  Options
	store *memStore
	addr  string // resolved at Start; Restart binds it again
	wsAdr string // the same for Options.WSAddr; "" without it

	op sync.Mutex // one Restart or Close at a time

	mu     sync.Mutex
	srv    *mqtt.Server
	ln     *listener
	wsln   *wsListener // nil without Options.WSAddr
	closed bool

	stuckCloses     atomic.Int64 // closes where mochi had to be forced, see Close
	abandonedCloses atomic.Int64 // closes where even that did not end mochi, see stop

	saverStop chan struct{}
	saverDone chan struct{}
}

// ErrClosed is returned by Restart after Close.
var ErrClosed = errors.New("broker: closed")

// ErrCloseAbandoned is returned by Close when mochi's goroutines were still blocked after
// their connections had been closed: they are left behind (see stop).
var ErrCloseAbandoned = errors.New("broker: mochi did not stop; its goroutines are abandoned")

// Start starts a broker listening on addr (host:port; port 0 picks a free one).
func Start(addr string, opts Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SaveInterval <= 0 {
		opts.SaveInterval = time.Second
	}
	if opts.CloseGrace <= 0 {
		opts.CloseGrace = 2 * time.Second
	}
	if opts.AbandonAfter <= 0 {
		opts.AbandonAfter = 30 * time.Second
	}
	b := &Broker{opts: opts, store: newMemStore(), addr: addr, wsAdr: opts.WSAddr}
	if opts.PersistDir != "" {
		if err := b.store.load(opts.PersistDir); err != nil {
			return nil, fmt.Errorf("broker: load %s: %w", opts.PersistDir, err)
		}
	}
	if err := b.serve(); err != nil {
		return nil, err
	}
	b.addr = b.ln.Address() // a port chosen by the system stays the same across Restart
	if b.wsln != nil {
		b.wsAdr = b.wsln.Address()
	}
	if opts.PersistDir != "" {
		b.saverStop, b.saverDone = make(chan struct{}), make(chan struct{})
		go b.saver()
	}
	return b, nil
}

// Addr returns the address the broker listens on, host:port.
func (b *Broker) Addr() string { return b.addr }

// URL returns the broker's address as an mqtt:// URL.
func (b *Broker) URL() string { return "mqtt://" + b.addr }

// WSAddr returns the address of the WebSocket listener, host:port; "" without one.
func (b *Broker) WSAddr() string { return b.wsAdr }

// WSURL returns the WebSocket listener as a ws:// (wss:// with Options.WSTLSConfig) URL
// with the path /mqtt; "" without one.
func (b *Broker) WSURL() string {
	if b.wsAdr == "" {
		return ""
	}
	if b.opts.WSTLSConfig != nil {
		return "wss://" + b.wsAdr + "/mqtt"
	}
	return "ws://" + b.wsAdr + "/mqtt"
}

// StuckCloses returns how many times a mochi server did not finish closing within
// Options.CloseGrace and had its client connections closed under it.
func (b *Broker) StuckCloses() int64 { return b.stuckCloses.Load() }

// AbandonedCloses returns how many times a mochi server still had not finished closing
// Options.AbandonAfter after its connections were closed, and was left behind.
func (b *Broker) AbandonedCloses() int64 { return b.abandonedCloses.Load() }

// capabilities returns mochi's defaults with the changes Tern's tools need (see BROKERS.md).
func (b *Broker) capabilities() *mqtt.Capabilities {
	caps := mqtt.NewDefaultServerCapabilities()
	// Without this mochi stamps a 24 h expiry on every forwarded message and drops stored
	// messages older than that.
	caps.MaximumMessageExpiryInterval = 0
	// Without this mochi copies the publisher's user properties into PUBACK/PUBREC.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	// mochi drops a QoS 1/2 message outright when a client's stored in-flight messages
	// (MaximumInflight) or its write queue (MaximumClientWritesPending) are full. Raise both
	// to their largest sensible values: an embedded broker for tests should queue, not drop.
	caps.MaximumInflight = 65535
	caps.MaximumClientWritesPending = 65536
	if b.opts.MaxInflight > 0 {
		caps.ReceiveMaximum = b.opts.MaxInflight
	}
	return caps
}

// serve builds a mochi server on b.addr, loads the state and starts it.
func (b *Broker) serve() error {
	srv := mqtt.New(&mqtt.Options{
		InlineClient: false,
		Capabilities: b.capabilities(),
		Logger:       b.opts.Logger,
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	if err := srv.AddHook(b.store, nil); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	for _, h := range b.opts.Hooks {
		if err := srv.AddHook(h, nil); err != nil {
			return fmt.Errorf("broker: hook %s: %w", h.ID(), err)
		}
	}
	goodbye := func(id string) { sayGoodbye(srv, id) }
	ln := newListener("t1", b.addr, goodbye)
	if err := srv.AddListener(ln); err != nil {
		return fmt.Errorf("broker: listen %s: %w", b.addr, err)
	}
	var wsln *wsListener
	if b.wsAdr != "" {
		wsln = newWSListener("ws1", b.wsAdr, b.opts.WSTLSConfig, goodbye)
		if err := srv.AddListener(wsln); err != nil {
			ln.closeAll()
			ln.wg.Done() // Init counted the accept loop, which never ran
			return fmt.Errorf("broker: listen %s: %w", b.wsAdr, err)
		}
	}
	if err := srv.Serve(); err != nil {
		// Serve fails only before it starts the listeners: our accept loops never ran.
		ln.closeAll()
		ln.wg.Done()
		if wsln != nil {
			wsln.closeAll()
			wsln.wg.Done()
		}
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.mu.Lock()
	b.srv, b.ln, b.wsln = srv, ln, wsln
	b.mu.Unlock()
	return nil
}

// stop closes the current mochi server and waits for all its connection goroutines, so
// nothing of it touches the shared state afterwards.
//
// mochi's Close sends DISCONNECT to each client while holding that client's lock, and a
// write to a client that does not read blocks for ever; after CloseGrace the connections are
// closed under it, which unblocks every such write. A mochi deadlocked on a lock (README,
// "mochi behaviours met" 8) is not woken by that: after Options.AbandonAfter stop gives up,
// logs it, counts it and returns ErrCloseAbandoned, leaving those goroutines behind rather
// than hanging its caller for ever.
func (b *Broker) stop() error {
	b.mu.Lock()
	srv, ln, wsln := b.srv, b.ln, b.wsln
	b.srv, b.ln, b.wsln = nil, nil, nil
	b.mu.Unlock()
	if srv == nil {
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Close()
	}()
	select {
	case <-done:
	case <-time.After(b.opts.CloseGrace):
		b.stuckCloses.Add(1)
		b.opts.Logger.Warn("broker: close is stuck; closing client connections")
		ln.closeAll()
		if wsln != nil {
			wsln.closeAll()
		}
		select {
		case <-done:
		case <-time.After(b.opts.AbandonAfter):
			b.abandonedCloses.Add(1)
			b.opts.Logger.Error("broker: mochi still blocked with its connections closed; abandoning it")
			return ErrCloseAbandoned
		}
	}
	ln.closeAll()
	ln.wait()
	if wsln != nil {
		wsln.closeAll()
		wsln.wait()
	}
	return nil
}

// Restart closes the broker and starts it again on the same address, keeping sessions,
// subscriptions, in-flight and retained messages. Clients are disconnected (DISCONNECT
// 0x8B, server shutting down) and must reconnect.
func (b *Broker) Restart() error {
	b.op.Lock()
	defer b.op.Unlock()
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	// An abandoned server has closed its listeners: the address is free all the same, and
	// the new server starts from the shared state (the give-up is logged and counted).
	_ = b.stop()
	// The address was ours a moment ago; a bind can still fail briefly, so retry a little.
	var err error
	for range 50 {
		if err = b.serve(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Close stops the broker and, with a PersistDir, saves its state one last time.
func (b *Broker) Close() error {
	b.op.Lock()
	defer b.op.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	err := b.stop()
	if b.saverStop != nil {
		close(b.saverStop)
		<-b.saverDone
		err = errors.Join(err, b.store.save(b.opts.PersistDir))
	}
	return err
}

// saver writes the state to PersistDir whenever it changed, every SaveInterval.
func (b *Broker) saver() {
	defer close(b.saverDone)
	t := time.NewTicker(b.opts.SaveInterval)
	defer t.Stop()
	var saved uint64
	for {
		select {
		case <-b.saverStop:
			return
		case <-t.C:
		}
		if n := b.store.changeCount(); n != saved {
			if err := b.store.save(b.opts.PersistDir); err != nil {
				b.opts.Logger.Error("broker: save state", "err", err)
				continue
			}
			saved = n
		}
	}
}

// sayGoodbye sends DISCONNECT 0x8B (server shutting down) to every client of srv on
// listener id and stops it, as the CloseFn mochi hands to a listener's Close does, without
// mochi's Clients.GetByListener: that takes the clients map's read lock twice, which
// deadlocks against a client leaving at that moment (README, "mochi behaviours met" 9).
// GetAll takes it once.
func sayGoodbye(srv *mqtt.Server, id string) {
	for _, cl := range srv.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			_ = srv.DisconnectClient(cl, packets.ErrServerShuttingDown) // says why it left
		}
	}
}

// listener is a mochi TCP listener that remembers its connections, so the broker can close
// every one of them, and waits for the goroutines it starts. mochi's own TCP listener can
// leave a connection accepted during Close attached to the closed server for ever.
type listener struct {
	id, addr string
	ln       net.Listener
	wg       sync.WaitGroup // accept loop and connection goroutines
	conns    connSet
	goodbye  func(id string) // sayGoodbye for its server
}

var _ listeners.Listener = (*listener)(nil)

func newListener(id, addr string, goodbye func(string)) *listener {
	return &listener{id: id, addr: addr, goodbye: goodbye}
}

func (l *listener) ID() string       { return l.id }
func (l *listener) Protocol() string { return "tcp" }

func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init binds the address. The accept loop that Serve will run is counted from here, so
// wait cannot miss it.
func (l *listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.ln = ln
	l.wg.Add(1)
	return nil
}

// Serve accepts connections until Close; mochi runs it on a goroutine of its own.
func (l *listener) Serve(establish listeners.EstablishFn) {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		if !l.conns.enter(&l.wg) {
			c.Close()
			return
		}
		h := l.conns.add(c)
		if h == nil {
			l.wg.Done()
			c.Close()
			return
		}
		go func() {
			defer l.wg.Done()
			establish(l.id, h) // its error only says why the client left
			l.conns.remove(h)
			h.Close()
		}()
	}
}

// Close stops accepting, disconnects the clients mochi knows (goodbye, in place of the
// CloseFn mochi passes), then closes whatever connection is left: one still before its
// CONNECT would otherwise be attached to the closing server afterwards and keep mochi's
// Close waiting for it. It returns once mochi has counted every connection handed to it,
// so that mochi's wait for its clients, which follows, cannot race with a count.
func (l *listener) Close(listeners.CloseFn) {
	if l.conns.markClosed() {
		return
	}
	l.ln.Close()
	l.goodbye(l.id)
	l.closeAll()
	l.conns.awaitAttached()
}

// closeAll stops accepting and closes every connection now.
func (l *listener) closeAll() {
	l.conns.markClosed()
	if l.ln != nil {
		l.ln.Close()
	}
	l.conns.closeAll()
}

// wait waits for the accept loop and every connection goroutine.
func (l *listener) wait() { l.wg.Wait() }
