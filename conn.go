package tern

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packet"
)

// ConnackInfo is what the broker granted in CONNACK, with absent properties replaced by the
// values the specification gives them.
type ConnackInfo struct {
	Version           byte   // protocol level in force: 5, or 4 for MQTT 3.1.1 (see WithProtocol)
	Broker            string // URL of the broker, without credentials
	SessionPresent    bool
	ClientID          string // the identifier in use: assigned by the broker or our own
	ReceiveMaximum    uint16 // how many QoS 1/2 publishes may await acknowledgement at once
	MaximumQoS        byte
	RetainAvailable   bool
	MaximumPacketSize uint32 // the broker's limit on what the client sends; 0: the protocol's
	TopicAliasMaximum uint16
	WildcardSubs      bool
	SharedSubs        bool
	SubscriptionIDs   bool
	KeepAlive         time.Duration // in force: the broker's Server Keep Alive if it sent one
	SessionExpiry     time.Duration // in force: the broker's value if it sent one
	ResponseInfo      string
	ServerReference   string
	ReasonString      string
	UserProperties    []packet.UserProperty
	Packet            *packet.Connack // the CONNACK as received
}

func newConnackInfo(ca *packet.Connack, cfg *config, broker *url.URL) *ConnackInfo {
	info := &ConnackInfo{
		Version:           packet.Version5,
		Broker:            redact(broker),
		SessionPresent:    ca.SessionPresent,
		ClientID:          cfg.clientID,
		ReceiveMaximum:    ca.ReceiveMax(),
		MaximumQoS:        ca.MaxQoS(),
		RetainAvailable:   ca.Retain(),
		MaximumPacketSize: ca.MaximumPacketSize,
		TopicAliasMaximum: ca.TopicAliasMaximum,
		WildcardSubs:      ca.Wildcards(),
		SharedSubs:        ca.Shared(),
		SubscriptionIDs:   ca.SubIDs(),
		KeepAlive:         cfg.keepAlive.Truncate(time.Second),
		SessionExpiry:     cfg.sessionExpiry.Truncate(time.Second),
		ResponseInfo:      ca.ResponseInfo,
		ServerReference:   ca.ServerReference,
		ReasonString:      ca.ReasonString,
		UserProperties:    ca.UserProperties,
		Packet:            ca,
	}
	if ca.AssignedClientID != "" {
		info.ClientID = ca.AssignedClientID
	}
	if ca.ServerKeepAlive != nil {
		info.KeepAlive = time.Duration(*ca.ServerKeepAlive) * time.Second
	}
	if ca.SessionExpiry != nil {
		info.SessionExpiry = time.Duration(*ca.SessionExpiry) * time.Second
	}
	if ca.Version == packet.Version311 {
		// 3.1.1 grants nothing in CONNACK: the window is ours to choose, subscription
		// identifiers do not exist, and the rest has the values MQTT 5 gives absent
		// properties (the broker refuses what it does not take in SUBACK or by closing).
		info.Version = packet.Version311
		info.ReceiveMaximum = cfg.window311
		info.SubscriptionIDs = false
	}
	return info
}

// conn is one network connection and its goroutines: the reader (decode and dispatch) and
// the writer (batched writes), plus the keepalive timer. The client's supervisor owns it and
// waits for both goroutines before starting the next connection; close stops the timer.
type conn struct {
	c       *Client
	broker  *url.URL // as dialled: a configured broker or a server's reference
	listGen uint64   // Client.brokersGen when the attempt that made it began (redirect.go)
	nc      net.Conn
	w       *writer
	r       *packet.Reader
	pacer   *readPacer // nil without read coalescing (readpace.go)
	info    *ConnackInfo
	ver     byte   // protocol level: packet.Version5 or packet.Version311
	gen     uint64 // connection number within the client's life
	reads   atomic.Uint64

	pingSent atomic.Int64 // unix nanos of the outstanding PINGREQ, 0 if none
	ka       *keepalive   // nil without a keepalive; set by start

	closeOnce sync.Once
	closing   chan struct{}         // closed when the connection starts to shut down
	readEnd   chan struct{}         // closed when the read loop has returned
	bye       atomic.Pointer[error] // set by a graceful Disconnect: the reason the read loop closes with
	errMu     sync.Mutex
	err       error // why it closed
	wg        sync.WaitGroup

	authMu sync.Mutex
	authCh chan *packet.Auth // the re-authentication waiting for the broker's AUTH

	overrunLogged bool // reader only: the broker's Receive Maximum overrun was logged

	// Read batch, reader only (see endBatch): queues with messages whose consumer has not
	// been woken yet, and whether the writer is corked.
	wakeLater []*Queue[*Message]
	corked    bool

	aliases *aliasTable // outbound topic aliases; nil when off
	inAlias []string    // inbound topic aliases, index = alias
}

// buildConnect assembles the CONNECT for one attempt at protocol level v.
func (c *Client) buildConnect(clean bool, v byte) *packet.Connect {
	cfg := c.cfg
	if v == packet.Version311 {
		// Session expiry maps to Clean Session (see WithProtocol); the MQTT 5 properties
		// are the client's own settings, which 3.1.1 cannot send. Features a user asked
		// for were refused by New or by the fallback.
		return &packet.Connect{
			Version:    packet.Version311,
			ClientID:   c.clientIDForConnect(),
			CleanStart: sessionExpirySeconds(cfg.sessionExpiry) == 0,
			KeepAlive:  uint16(cfg.keepAlive / time.Second),
			Username:   cfg.username,
			Password:   cfg.password,
			Will:       cfg.will,
		}
	}
	cp := &packet.Connect{
		ClientID:            c.clientIDForConnect(),
		CleanStart:          clean,
		KeepAlive:           uint16(cfg.keepAlive / time.Second),
		Username:            cfg.username,
		Password:            cfg.password,
		Will:                cfg.will,
		SessionExpiry:       sessionExpirySeconds(cfg.sessionExpiry),
		MaximumPacketSize:   cfg.maxPacketSize,
		TopicAliasMaximum:   cfg.inAliasMax,
		RequestResponseInfo: cfg.requestResp,
		UserProperties:      cfg.connectProps,
	}
	if cfg.receiveMax != 65535 {
		cp.ReceiveMaximum = cfg.receiveMax
	}
	if !cfg.requestProblem {
		cp.RequestProblemInfo = packet.Ptr(false)
	}
	return cp
}

func sessionExpirySeconds(d time.Duration) uint32 {
	s := d / time.Second
	if s >= 0xFFFFFFFF {
		return 0xFFFFFFFF
	}
	return uint32(s)
}

// dialConnAt opens a connection to broker and performs the CONNECT/CONNACK exchange at
// protocol level v, bounded by the connect timeout and ctx. The returned conn is not yet running. When ctx or the
// connect timeout ends the attempt, the error wraps context.Canceled or
// context.DeadlineExceeded rather than the network error the ended deadline caused.
// redirected marks broker as a server's reference (see dialBroker).
func (c *Client) dialConnAt(ctx context.Context, broker *url.URL, clean, redirected bool, v byte) (*conn, error) {
	parent := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.connectTimeout, errConnectTimeout)
	defer cancel()
	nc, err := c.cfg.dialBroker(ctx, broker, redirected)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", redact(broker), attemptErr(parent, ctx, err))
	}
	// The deadline first, then the expiry when ctx ends mid-handshake: the other way round,
	// a ctx ending between the two would have its expired deadline overwritten by the
	// connect timeout's, and the handshake would wait for that.
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	pacer := newReadPacer(nc, c.cfg.coalescing(broker))
	var src io.Reader = nc
	if pacer != nil {
		src = pacer
	}
	ca, r, err := c.handshake(ctx, nc, src, clean, v)
	if err != nil {
		err = attemptErr(parent, ctx, err)
		var perr *packet.Error
		if errors.As(err, &perr) && ctx.Err() == nil && v != packet.Version311 {
			// The broker broke the protocol before CONNACK: say why before closing
			// (best effort, bounded by the deadline already set).
			nc.Write((&packet.Disconnect{ReasonCode: perr.Code}).AppendTo(nil))
		}
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w", redact(broker), err)
	}
	if !stop() {
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w", redact(broker), attemptErr(parent, ctx, ctx.Err()))
	}
	nc.SetDeadline(time.Time{})
	info := newConnackInfo(ca, c.cfg, broker)
	cn := &conn{
		c:       c,
		broker:  broker,
		nc:      nc,
		w:       newWriter(nc, c.cfg.writeBufMax),
		r:       r,
		pacer:   pacer,
		info:    info,
		ver:     v,
		closing: make(chan struct{}),
		readEnd: make(chan struct{}),
	}
	if pacer != nil {
		pacer.sends = &cn.w.begun
	}
	if c.cfg.outAliases && info.TopicAliasMaximum > 0 {
		cn.aliases = newAliasTable(info.TopicAliasMaximum)
	}
	if c.cfg.inAliasMax > 0 {
		cn.inAlias = make([]string, int(c.cfg.inAliasMax)+1)
	}
	return cn, nil
}

// errConnectTimeout is the cause of an attempt ended by WithConnectTimeout.
var errConnectTimeout = errors.New("connect timeout")

// attemptErr replaces err, the failure of one connection attempt, by the reason the attempt's
// context ended, if it did: the deadline it set on the socket turns into "i/o timeout" and
// its cancellation into "operation was canceled", which hide that ctx ended the attempt.
// parent is the caller's context, ctx the attempt's (parent plus the connect timeout).
func attemptErr(parent, ctx context.Context, err error) error {
	if ctx.Err() == nil {
		// The socket deadline equals ctx's deadline but is a separate timer: it can fire
		// first. Once the deadline has passed, ctx's own timer is due at once.
		var ne net.Error
		dl, ok := ctx.Deadline()
		if !ok || !errors.As(err, &ne) || !ne.Timeout() || time.Now().Before(dl) {
			return err
		}
		<-ctx.Done()
	}
	if perr := parent.Err(); perr != nil {
		if cause := context.Cause(parent); cause != perr {
			return fmt.Errorf("%w: %w", perr, cause)
		}
		return perr
	}
	return fmt.Errorf("%w: %w", context.Cause(ctx), context.DeadlineExceeded)
}

// handshake sends CONNECT and reads CONNACK.
func (c *Client) handshake(ctx context.Context, nc net.Conn, src io.Reader, clean bool, v byte) (*packet.Connack, *packet.Reader, error) {
	cp := c.buildConnect(clean, v)
	if a := c.cfg.auth; a != nil && v != packet.Version311 {
		data, err := a.Start(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrAuthFailed, err)
		}
		cp.AuthMethod, cp.AuthData = a.Method(), data
	}
	if fn := c.cfg.connectBuilder; fn != nil {
		if err := fn(ctx, cp); err != nil {
			return nil, nil, fmt.Errorf("connect packet builder: %w", err)
		}
	}
	if err := cp.Validate(); err != nil {
		if errors.Is(err, packet.ErrNotInV311) {
			// Set by the CONNECT builder hook: refused, not dropped.
			err = fmt.Errorf("%w: %w", ErrNotInV311, err)
		}
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	if _, err := nc.Write(cp.AppendTo(nil)); err != nil {
		return nil, nil, fmt.Errorf("write CONNECT: %w", err)
	}
	// The limit advertised in CONNECT binds the broker from its first packet on, so CONNACK
	// and AUTH are refused above it too, before their properties are read.
	r := packet.NewReader(src, 32<<10)
	r.SetMaxPacketSize(int(c.cfg.maxPacketSize)) // 0: the protocol's limit
	for {
		f, err := r.ReadFrame()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if _, ok := err.(*packet.Error); !ok {
				err = fmt.Errorf("%w: %w", errNoConnack, err)
			}
			return nil, nil, fmt.Errorf("read CONNACK: %w", err)
		}
		switch f.Type() {
		case packet.CONNACK:
			ca := packet.Connack{Version: v}
			err := ca.Decode(f.Flags(), f.Body)
			f.Release()
			if err != nil {
				return nil, nil, fmt.Errorf("read CONNACK: %w", err)
			}
			if ca.ReasonCode.IsError() {
				return &ca, nil, &ReasonCodeError{Op: "connect", Code: ca.ReasonCode,
					Reason: ca.ReasonString, UserProperties: ca.UserProperties, ServerReference: ca.ServerReference}
			}
			if a := c.cfg.auth; a != nil {
				if ca.AuthMethod != a.Method() {
					return nil, nil, fmt.Errorf("read CONNACK: %w", errAuthMethod)
				}
				if err := a.Done(ctx, ca.AuthData); err != nil {
					return nil, nil, fmt.Errorf("%w: %w", ErrAuthFailed, err)
				}
			}
			return &ca, r, nil
		case packet.AUTH:
			if c.cfg.auth == nil || v == packet.Version311 {
				// [MQTT-4.12.0-6] no AUTH unless CONNECT carried an Authentication Method.
				f.Release()
				return nil, nil, fmt.Errorf("read CONNACK: %w", errAuthUnasked)
			}
			if err := c.handshakeAuth(ctx, nc, &f); err != nil {
				return nil, nil, fmt.Errorf("authenticate: %w", err)
			}
		default:
			t := f.Type()
			f.Release()
			return nil, nil, fmt.Errorf("read CONNACK: %w", &packet.Error{Code: packet.ProtocolError,
				Rule: "MQTT-3.2.0-1", Detail: t.String() + " before CONNACK"})
		}
	}
}

// start arms the keepalive and launches the connection's goroutines.
func (cn *conn) start() {
	if ka := cn.info.KeepAlive; ka > 0 {
		cn.ka = startKeepalive(cn, ka) // before the goroutines that may close cn read it
	}
	if cn.pacer != nil {
		cn.pacer.start()
	}
	cn.wg.Add(2)
	go func() {
		defer cn.wg.Done()
		cn.w.loop()
		// A failed write is the only sign of a broken connection while the read loop is
		// blocked on a full subscription: report it, or nothing ever closes the connection.
		if err := cn.w.failure(); err != nil {
			cn.close(fmt.Errorf("%w: write: %w", ErrConnectionLost, err))
		}
	}()
	go func() {
		defer cn.wg.Done()
		defer close(cn.readEnd)
		cn.readLoop()
	}()
}

// close shuts the connection down for reason err. It does not wait; use wait for that.
func (cn *conn) close(err error) {
	cn.closeOnce.Do(func() {
		cn.errMu.Lock()
		cn.err = err
		cn.errMu.Unlock()
		close(cn.closing)
		if cn.ka != nil {
			cn.ka.stop()
		}
		cn.w.fail(ErrConnectionLost)
		cn.nc.Close()
	})
}

// closeWith sends DISCONNECT with code (best effort, bounded) and closes.
func (cn *conn) closeWith(code packet.ReasonCode, err error) {
	if cn.ver == packet.Version311 {
		// 3.1.1 closes on a protocol violation without DISCONNECT, which there means a
		// normal end and would discard the will.
		cn.close(err)
		return
	}
	d := &packet.Disconnect{ReasonCode: code}
	if perr := (*packet.Error)(nil); errors.As(err, &perr) && perr.Detail != "" {
		d.ReasonString = perr.Detail
	}
	cn.sendDisconnect(context.Background(), d, err, false)
}

// sendDisconnect stops the writer, writes d directly (bounded by a short deadline) and
// closes the connection with reason err. graceful (Client.Disconnect) waits for the broker
// to close first (awaitPeerClose).
func (cn *conn) sendDisconnect(ctx context.Context, d *packet.Disconnect, err error, graceful bool) {
	deadline := time.Now().Add(time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	cn.nc.SetWriteDeadline(deadline)
	cn.w.fail(ErrConnectionLost)
	select {
	case <-cn.w.stopped:
		d.Version = cn.ver
		if _, werr := cn.nc.Write(d.AppendTo(nil)); werr == nil && graceful {
			cn.awaitPeerClose(ctx, deadline, err)
		}
	case <-ctx.Done():
		// The writer is stuck in a write the deadline has not ended yet: give up on
		// DISCONNECT; closing the socket below frees it.
	}
	cn.close(err)
}

// awaitPeerClose ends a graceful Disconnect: it shuts down the sending side of the
// connection after the DISCONNECT and waits, until deadline or ctx ends, for the broker to
// close its side. The broker reads a stream in order, so once it closes it has read every
// acknowledgement the client sent before the DISCONNECT: the next connection of the same
// session, from this process or another, is not sent again what they acknowledged (a broker
// may take a new connection's CONNECT before it reads an old connection's last bytes, and
// then drops them unread). Transports that cannot half-close (WebSocket) close at once, as
// before. Messages that arrive meanwhile are not acknowledged: the session sends them again.
func (cn *conn) awaitPeerClose(ctx context.Context, deadline time.Time, err error) {
	cw, ok := cn.nc.(interface{ CloseWrite() error })
	if !ok {
		return
	}
	cn.bye.Store(&err)
	if cw.CloseWrite() != nil {
		return
	}
	// The read loop ends by then, whatever the broker does.
	if cn.pacer != nil {
		cn.pacer.stop(deadline)
	} else {
		cn.nc.SetReadDeadline(deadline)
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-cn.readEnd:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (cn *conn) reason() error {
	cn.errMu.Lock()
	defer cn.errMu.Unlock()
	return cn.err
}

// wait waits for the connection's goroutines and for a keepalive firing in progress.
func (cn *conn) wait() {
	cn.wg.Wait()
	if cn.ka != nil {
		cn.ka.wait()
	}
}

// clientIDForConnect is the identifier to send: the configured one, or after a first
// connect the one the broker assigned, so a reconnect keeps the same identity.
func (c *Client) clientIDForConnect() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientID
}
