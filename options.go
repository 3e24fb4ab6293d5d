package tern

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"time"

	"github.com/ternmq/tern/packet"
)

// Option configures a Client; pass options to New.
type Option func(*config) error

// DialFunc opens the byte stream to a broker. It is given the broker URL as parsed by New and
// must honour ctx. Use it to wrap connections or for a transport of your own; WebSocket is
// better served by WithTransport(ws.New()), which keeps the TLS and redirect rules.
type DialFunc func(ctx context.Context, broker *url.URL) (net.Conn, error)

// config is everything New accepts. Defaults live in defaultConfig, cross-checks in validate.
type config struct {
	brokers        []*url.URL
	clientID       string
	username       string
	password       []byte
	cleanStart     bool
	sessionExpiry  time.Duration
	keepAlive      time.Duration
	pingTimeout    time.Duration
	connectTimeout time.Duration
	tlsConfig      *tls.Config
	dialer         *net.Dialer
	dial           DialFunc
	transports     map[string]Transport // WithTransport, by scheme
	will           *packet.Will
	receiveMax     uint16
	readCoalesce   time.Duration // WithReadCoalescing
	maxPacketSize  uint32
	inAliasMax     uint16
	outAliases     bool
	requestProblem bool
	requestResp    bool
	connectProps   []packet.UserProperty
	logger         *slog.Logger
	stats          bool
	writeBufMax    int
	flushTimeout   time.Duration
	subBuffer      int
	dropPolicy     DropPolicy

	auth             Authenticator
	connectBuilder   func(context.Context, *packet.Connect) error
	strictReceiveMax bool
	background       bool
	sessionLoss      SessionLossPolicy
	inflightTTL      time.Duration
	store            Store
	onReconnect      func(attempt int, broker string)
	onUp             func(*ConnackInfo)
	onDown           func(error) bool
	onConnectErr     func(error)
	onServerDisc     func(*packet.Disconnect)
	backoff          Backoff
	redirectPolicy   RedirectPolicy
	onUnrouted       func(*Message)

	cleanOnReconnect bool                // WithCleanStartOnReconnect
	writeOverflow    WriteOverflowPolicy // WithWriteOverflowPolicy
	poolSize         int                 // WithPublisherPool; 0 or 1: no pool
	poolRouting      PoolRouting
	poolClientID     func(parent string, i int) string
	groupMember      string // set by NewClientGroup: the member's name, see Message.Member

	protocol  Protocol // WithProtocol
	window311 uint16   // WithMQTT311Window
}

// Defaults. A test checks that the documentation of each option states these values.
const (
	DefaultKeepAlive      = 60 * time.Second
	DefaultPingTimeout    = 10 * time.Second
	DefaultConnectTimeout = 30 * time.Second
	DefaultReceiveMaximum = 1024
	DefaultWriteBuffer    = 4 << 20
	DefaultFlushTimeout   = 5 * time.Second
	DefaultSubBuffer      = 1024
	// DefaultMaximumPacketSize is the largest packet the client accepts unless
	// WithMaximumPacketSize says otherwise: 1 MiB. See WithMaximumPacketSize for why.
	DefaultMaximumPacketSize = 1 << 20
)

// UnlimitedPacketSize, given to WithMaximumPacketSize, removes the client's own limit on
// inbound packets: only the protocol's 256 MiB remains, and a broker can make the client hold
// that much memory for one packet.
const UnlimitedPacketSize uint32 = 0

func defaultConfig() *config {
	return &config{
		cleanStart:     true,
		keepAlive:      DefaultKeepAlive,
		pingTimeout:    DefaultPingTimeout,
		connectTimeout: DefaultConnectTimeout,
		receiveMax:     DefaultReceiveMaximum,
		requestProblem: true,
		writeBufMax:    DefaultWriteBuffer,
		flushTimeout:   DefaultFlushTimeout,
		subBuffer:      DefaultSubBuffer,
		maxPacketSize:  DefaultMaximumPacketSize,
		dropPolicy:     Block,
		dialer:         &net.Dialer{KeepAlive: -1},
		backoff:        ExponentialBackoff{Min: 100 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.2},
		logger:         slog.New(slog.DiscardHandler),
		redirectPolicy: FollowRedirects,
		window311:      DefaultMQTT311Window,
		readCoalesce:   DefaultReadCoalescing,
	}
}

func (c *config) validate() error {
	if len(c.brokers) == 0 {
		return fmt.Errorf("%w: no broker: use WithBroker", ErrInvalidOption)
	}
	for _, u := range c.brokers {
		if err := c.checkTransport(u); err != nil {
			return err
		}
	}
	if err := packet.ValidString(c.clientID); err != nil {
		return fmt.Errorf("%w: client id: %w", ErrInvalidOption, err)
	}
	if c.clientID == "" && !c.cleanStart && c.sessionExpiry > 0 {
		// A broker-assigned id changes on every connect, so a session kept under it could
		// never be resumed.
		return fmt.Errorf("%w: a persistent session needs WithClientID", ErrInvalidOption)
	}
	if c.will != nil {
		if err := (&packet.Connect{Will: c.will}).Validate(); err != nil {
			return fmt.Errorf("%w: will: %w", ErrInvalidOption, err)
		}
	}
	if c.protocol == MQTT311 {
		if err := c.connectFeatures311(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
	}
	if c.keepAlive > 0 && c.pingTimeout <= 0 {
		return fmt.Errorf("%w: ping timeout must be positive", ErrInvalidOption)
	}
	for _, up := range c.connectProps {
		if err := packet.ValidString(up.Key); err != nil {
			return fmt.Errorf("%w: connect user property: %w", ErrInvalidOption, err)
		}
		if err := packet.ValidString(up.Value); err != nil {
			return fmt.Errorf("%w: connect user property: %w", ErrInvalidOption, err)
		}
	}
	if err := packet.ValidString(c.username); err != nil {
		return fmt.Errorf("%w: user name: %w", ErrInvalidOption, err)
	}
	if len(c.password) > 0xFFFF {
		return fmt.Errorf("%w: password longer than 65535 bytes", ErrInvalidOption)
	}
	return nil
}

func parseBroker(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: broker %q: %w", ErrInvalidOption, raw, err)
	}
	switch u.Scheme {
	case "mqtt", "tcp", "mqtts", "tls", "ssl", "ws", "wss":
		if u.Hostname() == "" {
			return nil, fmt.Errorf("%w: broker %q: no host", ErrInvalidOption, raw)
		}
	case "unix":
		if u.Path == "" && u.Opaque == "" {
			return nil, fmt.Errorf("%w: broker %q: no socket path", ErrInvalidOption, raw)
		}
	default:
		return nil, fmt.Errorf("%w: broker %q: unknown scheme %q (want mqtt, tcp, mqtts, tls, ws, wss or unix)", ErrInvalidOption, raw, u.Scheme)
	}
	return u, nil
}

// WithBroker sets the broker to connect to, as a URL: mqtt:// or tcp:// (port 1883 by
// default), mqtts:// or tls:// (8883), unix:///path/to/socket, or ws:// and wss:// (80, 443;
// the path is the broker's WebSocket endpoint, often /mqtt) with the WebSocket transport:
// WithTransport(ws.New()) from the github.com/ternmq/tern/ws module. It replaces any broker
// set before.
func WithBroker(rawURL string) Option {
	return WithBrokers(rawURL)
}

// WithBrokers sets several interchangeable brokers serving one session; the client fails
// over between them.
func WithBrokers(rawURLs ...string) Option {
	return func(c *config) error {
		if len(rawURLs) == 0 {
			return fmt.Errorf("%w: WithBrokers needs at least one URL", ErrInvalidOption)
		}
		c.brokers = c.brokers[:0]
		for _, raw := range rawURLs {
			u, err := parseBroker(raw)
			if err != nil {
				return err
			}
			c.brokers = append(c.brokers, u)
		}
		return nil
	}
}

// WithClientID sets the client identifier. Default: empty, and the broker assigns one
// (ClientID returns it after Connect).
func WithClientID(id string) Option {
	return func(c *config) error { c.clientID = id; return nil }
}

// WithCredentials sets the user name and password sent in CONNECT. They are never logged.
func WithCredentials(user string, password []byte) Option {
	return func(c *config) error {
		c.username, c.password = user, append([]byte(nil), password...)
		return nil
	}
}

// WithCleanStart sets Clean Start on the first connection. Default: true.
func WithCleanStart(clean bool) Option {
	return func(c *config) error { c.cleanStart = clean; return nil }
}

// WithSessionExpiry sets how long the broker keeps the session after the connection closes.
// Default: 0, the session ends with the connection. Rounded down to whole seconds;
// math.MaxUint32 seconds or more means the session never expires.
func WithSessionExpiry(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: negative session expiry", ErrInvalidOption)
		}
		c.sessionExpiry = d
		return nil
	}
}

// WithKeepAlive sets the keepalive interval, rounded down to whole seconds (at most 65535 s).
// The client sends PINGREQ when either direction has been quiet for most of it. Default: 60 s.
func WithKeepAlive(d time.Duration) Option {
	return func(c *config) error {
		if d < time.Second || d > math.MaxUint16*time.Second {
			return fmt.Errorf("%w: keepalive %v not in [1s, 65535s]", ErrInvalidOption, d)
		}
		c.keepAlive = d
		return nil
	}
}

// WithoutKeepAlive turns keepalive off (keepalive 0 in CONNECT). A dead connection is then
// found only by a failed write.
func WithoutKeepAlive() Option {
	return func(c *config) error { c.keepAlive = 0; return nil }
}

// WithPingTimeout sets how long to wait for PINGRESP before the connection is judged dead.
// Default: 10 s.
func WithPingTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: ping timeout must be positive", ErrInvalidOption)
		}
		c.pingTimeout = d
		return nil
	}
}

// WithConnectTimeout bounds one connection attempt: dial, TLS handshake and CONNACK.
// Default: 30 s.
func WithConnectTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: connect timeout must be positive", ErrInvalidOption)
		}
		c.connectTimeout = d
		return nil
	}
}

// WithTLSConfig sets the TLS configuration for mqtts:// and tls:// brokers, including client
// certificates. The server name defaults to the broker's host; for a server redirect it is
// always the target's host (see WithRedirectPolicy).
func WithTLSConfig(t *tls.Config) Option {
	return func(c *config) error { c.tlsConfig = t; return nil }
}

// WithDialer sets the net.Dialer for TCP, TLS and unix brokers.
func WithDialer(d *net.Dialer) Option {
	return func(c *config) error {
		if d == nil {
			return fmt.Errorf("%w: nil dialer", ErrInvalidOption)
		}
		c.dialer = d
		return nil
	}
}

// WithDialFunc replaces the built-in transports with fn for every broker URL.
func WithDialFunc(fn DialFunc) Option {
	return func(c *config) error { c.dial = fn; return nil }
}

// WithWill sets the will message the broker publishes if the connection ends without a
// normal DISCONNECT.
func WithWill(w *packet.Will) Option {
	return func(c *config) error { c.will = w; return nil }
}

// WithReadCoalescing bounds how long the read loop lets a fast inbound stream gather before
// it wakes up (see docs/DESIGN.md, "Read coalescing"). When packets arrive faster than the
// read loop needs to handle them, one at a time each would cost a wake-up; the client then
// asks the kernel to wake it only once a batch worth about half of d has arrived (or, once
// the peer is seen sending on without waiting for anything from the client, as much as a
// read takes), and never waits longer than d for it. Slower traffic (single packets, requests and their answers, a
// trickle of messages) is read as soon as it arrives. A stream that pauses delays what
// arrived just before the pause by at most d; a peer that waits for our answer before it
// sends more costs one wait of d now and then. 0 turns it off: every packet is read as it
// arrives.
//
// Plain TCP connections (mqtt://, tcp://) that the client dials itself, on Linux only; it
// has no effect on others, nor on connections from WithDialFunc or a Transport, whose socket
// is left as its maker set it. Default: 500 µs (DefaultReadCoalescing).
func WithReadCoalescing(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 || d > time.Second {
			return fmt.Errorf("%w: read coalescing %v: must be between 0 and 1s", ErrInvalidOption, d)
		}
		c.readCoalesce = d
		return nil
	}
}

// WithReceiveMaximum sets how many QoS 1 and 2 messages the broker may have unacknowledged
// towards this client at once (see WithStrictReceiveMaximum for a broker that sends more).
// Default: 1024.
func WithReceiveMaximum(n uint16) Option {
	return func(c *config) error {
		if n == 0 {
			return fmt.Errorf("%w: receive maximum must be at least 1", ErrInvalidOption)
		}
		c.receiveMax = n
		return nil
	}
}

// WithMaximumPacketSize sets the largest packet, in bytes, the client accepts. It is sent in
// CONNECT, so the broker must not send larger packets ([MQTT-3.1.2-24]) and drops messages
// that would not fit; a broker that sends one anyway is refused from the packet's fixed header,
// before its body is read or any memory is allocated for it, with DISCONNECT 0x95 (packet
// too large). The limit holds from the first packet, CONNACK and AUTH included.
//
// Default: 1 MiB (DefaultMaximumPacketSize). That is the largest body the client's buffer
// pools serve, enough for telemetry, commands and small files, and it bounds what a broker
// can make the client hold for one packet; without it one 256 MiB packet costs that much
// memory. Raise it for larger messages. UnlimitedPacketSize (0) leaves only the protocol's
// own limit of 256 MiB.
//
// MQTT 3.1.1 has no way to tell the broker the limit: there a larger PUBLISH is read past
// without being held, acknowledged (as an MQTT 5 broker would have dropped it), logged at
// warn level with its topic and counted in Stats().Oversized; the connection stays up.
func WithMaximumPacketSize(n uint32) Option {
	return func(c *config) error {
		if n != 0 && n < 16 {
			return fmt.Errorf("%w: maximum packet size %d is too small to be useful", ErrInvalidOption, n)
		}
		c.maxPacketSize = n
		return nil
	}
}

// WithInboundTopicAliasMaximum lets the broker use up to n topic aliases towards this
// client. Default: 0, no aliases.
func WithInboundTopicAliasMaximum(n uint16) Option {
	return func(c *config) error { c.inAliasMax = n; return nil }
}

// WithTopicAliases turns on outbound topic aliases: the client assigns aliases, up to the
// broker's Topic Alias Maximum, to topics it publishes to, and sends the topic only once per
// connection. Aliases are assigned when a packet is written and never stored. Default: off.
func WithTopicAliases(on bool) Option {
	return func(c *config) error { c.outAliases = on; return nil }
}

// WithRequestProblemInformation sets whether the broker may add a Reason String and user
// properties to its failure reports. Default: true.
func WithRequestProblemInformation(b bool) Option {
	return func(c *config) error { c.requestProblem = b; return nil }
}

// WithRequestResponseInformation asks the broker for Response Information in CONNACK.
// Default: false.
func WithRequestResponseInformation(b bool) Option {
	return func(c *config) error { c.requestResp = b; return nil }
}

// WithConnectUserProperty adds a user property to every CONNECT.
func WithConnectUserProperty(key, value string) Option {
	return func(c *config) error {
		c.connectProps = append(c.connectProps, packet.UserProperty{Key: key, Value: value})
		return nil
	}
}

// WithLogger sets the structured logger. Default: discard. Credentials are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		c.logger = l
		return nil
	}
}

// WithStats turns on the counters that Stats reports. Default: off; when off, counting costs
// one predictable branch per event.
func WithStats() Option {
	return func(c *config) error { c.stats = true; return nil }
}

// WithWriteBuffer bounds the bytes waiting to be written. A publisher finding it full waits,
// bounded by its ctx. Default: 4 MiB.
func WithWriteBuffer(n int) Option {
	return func(c *config) error {
		if n < 1024 {
			return fmt.Errorf("%w: write buffer must be at least 1024 bytes", ErrInvalidOption)
		}
		c.writeBufMax = n
		return nil
	}
}

// WithDisconnectFlushTimeout bounds how long Disconnect waits for queued bytes to be written
// before it sends DISCONNECT, when its ctx has no earlier deadline. Default: 5 s.
func WithDisconnectFlushTimeout(d time.Duration) Option {
	return func(c *config) error { c.flushTimeout = d; return nil }
}

// WithMaxSubscribeQueueSize sets the default buffer of each subscription, in messages.
// Default: 1024. SubBuffer overrides it per subscription.
func WithMaxSubscribeQueueSize(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%w: subscription buffer must be at least 1", ErrInvalidOption)
		}
		c.subBuffer = n
		return nil
	}
}

// WithDropPolicy sets the default policy of subscriptions whose buffer is full. Default:
// Block. SubDropPolicy overrides it per subscription.
func WithDropPolicy(p DropPolicy) Option {
	return func(c *config) error {
		if p > DropOldest {
			return fmt.Errorf("%w: unknown drop policy %d", ErrInvalidOption, p)
		}
		c.dropPolicy = p
		return nil
	}
}

// WithOnConnectionUp sets a callback run after each successful connect with what the broker
// granted. Callbacks run one at a time, in event order, off the read loop; they must not
// block for long.
func WithOnConnectionUp(fn func(*ConnackInfo)) Option {
	return func(c *config) error { c.onUp = fn; return nil }
}

// WithOnConnectionDown sets a callback run when a connection ends with the reason. Returning
// false stops the client from reconnecting. Same execution rules as WithOnConnectionUp.
func WithOnConnectionDown(fn func(error) bool) Option {
	return func(c *config) error { c.onDown = fn; return nil }
}

// WithOnConnectError sets a callback run for each failed connection attempt.
func WithOnConnectError(fn func(error)) Option {
	return func(c *config) error { c.onConnectErr = fn; return nil }
}

// WithOnServerDisconnect sets a callback run when the broker sends DISCONNECT.
func WithOnServerDisconnect(fn func(*packet.Disconnect)) Option {
	return func(c *config) error { c.onServerDisc = fn; return nil }
}

// WithReconnectBackoff sets the delay policy between connection attempts. Default:
// ExponentialBackoff{Min: 100ms, Max: 30s, Jitter: 0.2}.
func WithReconnectBackoff(b Backoff) Option {
	return func(c *config) error {
		if b == nil {
			return fmt.Errorf("%w: nil backoff", ErrInvalidOption)
		}
		c.backoff = b
		return nil
	}
}

// WithBackgroundConnect makes Connect return at once and leaves the first connection, like
// every later one, to the supervisor, which retries with backoff until it succeeds. Until
// then Publish and Subscribe wait for the connection, bounded by their ctx. Default: off,
// Connect waits for the first CONNACK and reports its failure.
func WithBackgroundConnect() Option {
	return func(c *config) error { c.background = true; return nil }
}

// WithSessionLossPolicy sets what happens to unacknowledged publishes when the broker comes
// back without the session. Default: Republish.
func WithSessionLossPolicy(p SessionLossPolicy) Option {
	return func(c *config) error {
		if p > FailPending {
			return fmt.Errorf("%w: unknown session loss policy %d", ErrInvalidOption, p)
		}
		c.sessionLoss = p
		return nil
	}
}

// WithInflightTTL bounds how long a QoS 1/2 publish may wait for a connection to carry it:
// past it the publish completes with ErrInflightTTL instead of waiting forever. A publish
// already outstanding on a live connection is settled by the broker or by the connection's
// end, never by this timer (MQTT 5 §4.4 forbids resending on a timer). Default: 0, no limit.
func WithInflightTTL(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: negative in-flight TTL", ErrInvalidOption)
		}
		c.inflightTTL = d
		return nil
	}
}

// WithStore keeps the session state in s, so it survives the process (see Store and the
// filestore package). Default: none, the session lives in memory.
func WithStore(s Store) Option {
	return func(c *config) error { c.store = s; return nil }
}

// WithOnReconnectAttempt sets a callback run before each attempt to (re)connect, with the
// attempt number and the broker tried first. Same execution rules as WithOnConnectionUp.
func WithOnReconnectAttempt(fn func(attempt int, broker string)) Option {
	return func(c *config) error { c.onReconnect = fn; return nil }
}

// WithStrictReceiveMaximum makes the client disconnect (reason 0x93) a broker that sends more
// unacknowledged QoS 1/2 messages than WithReceiveMaximum allows. Default: false: the overrun
// is logged once per connection and counted in Stats, because common brokers (Mosquitto 2.0,
// mochi) overrun the window and a disconnection would lose what is in flight; memory stays
// bounded by the subscription buffers either way.
func WithStrictReceiveMaximum(strict bool) Option {
	return func(c *config) error { c.strictReceiveMax = strict; return nil }
}

// WithRedirectPolicy sets which server redirects the client follows (CONNACK or DISCONNECT
// with 0x9C use another server or 0x9D server moved, and a Server Reference). Default:
// FollowRedirects. IgnoreRedirects follows none; RedirectAllowList, or any func, restricts
// them.
//
// Whatever the policy, a redirect never lowers the transport's security: from TLS (mqtts,
// tls, wss) or a unix socket only to TLS, and never from the network to a unix socket. Such a
// refusal is logged at warn level, counted in Stats.RedirectsRefused and passed to the
// WithOnConnectError callback as ErrRedirectRefused. A host[:port] reference keeps the
// sender's scheme, so TLS stays TLS; TLS to a redirect target uses the WithTLSConfig
// configuration with the target's host as the server name to verify.
//
// A 0x9C redirect is tried on the next attempt only; a 0x9D one is the first choice of every
// attempt until an attempt to it fails. Either way the configured brokers are never replaced:
// a target that cannot be reached sends the client back to them in the same attempt. A
// redirect loop ends the attempt, so the reconnect backoff applies.
func WithRedirectPolicy(p RedirectPolicy) Option {
	return func(c *config) error {
		if p == nil {
			return fmt.Errorf("%w: nil redirect policy (use IgnoreRedirects)", ErrInvalidOption)
		}
		c.redirectPolicy = p
		return nil
	}
}

// WithUnroutedHandler sets a catch-all handler for messages that match no subscription of
// this client, such as those a resumed session delivers for a subscription the program has
// not made (again) yet. Without it, such a message is acknowledged to the broker and
// dropped: counted in Stats().Unrouted and, for QoS 1/2, logged at warn level (the first of
// each connection, then at most one warning every 10 s).
//
// fn runs one message at a time, in arrival order, on a goroutine of its own (never on the
// read loop), and must not block for long. The message is acknowledged when fn returns. It
// is buffered like a subscription with the default buffer (WithMaxSubscribeQueueSize) and
// the Block policy: QoS 1/2 messages beyond the buffer wait unacknowledged within the
// Receive Maximum, QoS 0 ones make the read loop wait. Default: none.
func WithUnroutedHandler(fn func(*Message)) Option {
	return func(c *config) error { c.onUnrouted = fn; return nil }
}

// WithCleanStartOnReconnect sets Clean Start on every CONNECT after the first. Default: false:
// a reconnect resumes the session (when its expiry keeps it), so QoS 1/2 exchanges in flight
// complete. true starts every connection afresh: the broker drops what it kept, and the
// client's unacknowledged publishes follow the session-loss policy (WithSessionLossPolicy).
// WithCleanStart still decides the first connection.
func WithCleanStartOnReconnect(clean bool) Option {
	return func(c *config) error { c.cleanOnReconnect = clean; return nil }
}

// WithConnectUserProperties sets the whole list of user properties sent in every CONNECT,
// replacing what earlier WithConnectUserProperty options added. The slice is copied. Each key
// and value is checked by New (UTF-8, length).
func WithConnectUserProperties(props []packet.UserProperty) Option {
	return func(c *config) error {
		c.connectProps = append([]packet.UserProperty(nil), props...)
		return nil
	}
}

// WriteOverflowPolicy decides what a QoS 0 publish does when the write buffer
// (WithWriteBuffer) is full because the connection writes slower than the program publishes.
type WriteOverflowPolicy uint8

const (
	// WriteBlock waits for room, bounded by the publish's ctx. Nothing is lost.
	WriteBlock WriteOverflowPolicy = iota
	// WriteFailFast returns ErrWriteQueueFull at once; the message is not sent. For
	// producers that prefer dropping fresh QoS 0 data (telemetry) to waiting.
	WriteFailFast
)

func (p WriteOverflowPolicy) String() string {
	switch p {
	case WriteBlock:
		return "block"
	case WriteFailFast:
		return "fail-fast"
	}
	return "unknown"
}

// WithWriteOverflowPolicy sets what a QoS 0 Publish does when the write buffer is full.
// Default: WriteBlock. QoS 1 and 2 publishes are bounded by the broker's Receive Maximum
// window instead and always wait for a place in it (bounded by their ctx), whatever the
// policy.
func WithWriteOverflowPolicy(p WriteOverflowPolicy) Option {
	return func(c *config) error {
		if p > WriteFailFast {
			return fmt.Errorf("%w: unknown write overflow policy %d", ErrInvalidOption, p)
		}
		c.writeOverflow = p
		return nil
	}
}

// WithPublisherPool adds n publish-only connections to the same broker (the pool) beside the
// main one, for brokers that cap the window per connection (Mosquitto's
// max_inflight_messages): Publish and PublishAsync, QoS 0, 1 and 2, go to a pool member
// chosen by WithPublisherPoolRouting, so up to n windows are busy at once. Default: 0, no
// pool (0 and 1 both mean none).
//
// Members connect in the background after Connect, each with its own supervisor, and are
// disconnected by Disconnect. They use the main connection's broker list, credentials, TLS
// and limits, but Clean Start and session expiry 0, no store, no will, no subscriptions and
// no lifecycle callbacks: a member that loses its connection republishes what it had in
// flight on the next one (at least once, whatever WithSessionLossPolicy says for the main
// connection), so keep work that needs the store or exactly-once across a crash on the main
// connection (QueuePublisher does, see below). A WithConnectPacketBuilder runs for each
// member's CONNECT too, possibly at the same time as for others; the member's own client id,
// Clean Start and session expiry 0 are put back after it. Member client
// ids come from WithPublisherPoolClientID. While no member is connected, publishes go to the
// main connection and Stats().PoolFallbacks counts them. Cost: n more connections, with
// their goroutines; one atomic add per publish for the choice.
//
// QueuePublisher publishes through the main connection only (it needs ordered tokens of
// one session), and so does everything published before the first Connect.
func WithPublisherPool(n int) Option {
	return func(c *config) error {
		if n < 0 || n > 64 {
			return fmt.Errorf("%w: publisher pool size %d not in [0, 64]", ErrInvalidOption, n)
		}
		c.poolSize = n
		return nil
	}
}

// WithPublisherPoolRouting sets how the pool picks the member for a publish. Default:
// PoolRoundRobin. See PoolRouting.
func WithPublisherPoolRouting(r PoolRouting) Option {
	return func(c *config) error {
		if r > PoolLeastInFlight {
			return fmt.Errorf("%w: unknown pool routing %d", ErrInvalidOption, r)
		}
		c.poolRouting = r
		return nil
	}
}

// WithPublisherPoolClientID sets how pool member client ids are made from the main
// connection's id (the configured one, or the one the broker assigned) and the member's
// index, 1 to n. Default: parent + "-pub-" + index, or an empty id (assigned by the broker)
// when the parent's is empty. Ids must differ from each other and from the parent's: a
// broker disconnects the older of two connections with one id.
func WithPublisherPoolClientID(fn func(parent string, i int) string) Option {
	return func(c *config) error {
		if fn == nil {
			return fmt.Errorf("%w: nil pool client id function", ErrInvalidOption)
		}
		c.poolClientID = fn
		return nil
	}
}
