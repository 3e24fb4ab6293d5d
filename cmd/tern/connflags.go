package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
	"github.com/ternmq/tern/ws"
)

// defaultBroker is used when neither a broker flag nor TERN_BROKER is given.
const defaultBroker = "mqtt://localhost:1883"

// connFlags are the connection options every client command shares.
type connFlags struct {
	url, host      string
	port           int
	id             string
	user, password string
	passwordFile   string
	keepAlive      int
	persistent     bool
	sessionExpiry  int64
	cafile         string
	cert, key      string
	insecure       bool
	willTopic      string
	willPayload    string
	willQoS        int
	willRetain     bool
	version        string
	connectTimeout time.Duration
	retry          bool
}

// addConnFlags registers the shared connection flags on c.
func addConnFlags(c *cliFlags, f *connFlags) { addConnFlagsFor(c, f, true) }

// addConnFlagsFor registers the shared connection flags on c; without session it leaves out
// the session flags (-c, -x), for a command whose -c means something else (bench: clients).
func addConnFlagsFor(c *cliFlags, f *connFlags, session bool) {
	c.String(&f.url, "L,url,broker", "URL", "", "broker: mqtt://, mqtts://, tcp://, tls://, ws://, wss://, unix:// URL or bare host:port (default $TERN_BROKER or "+defaultBroker+")")
	c.String(&f.host, "h,host", "HOST", "", "broker host (instead of --url)")
	c.Int(&f.port, "p,port", "PORT", 0, "broker port (default 1883, 8883 with TLS)")
	c.String(&f.id, "i,id", "ID", "", "client identifier (default: assigned by the broker; required with -c)")
	c.String(&f.user, "u,username", "USER", "", "user name")
	c.String(&f.password, "P,pw", "PASSWORD", "", "password (visible in ps: prefer --password-file or $TERN_PASSWORD)")
	c.String(&f.passwordFile, "password-file", "FILE", "", "read the password from FILE (trailing newline removed)")
	c.Int(&f.keepAlive, "k,keepalive", "SECONDS", 60, "keep alive interval; 0 turns it off")
	f.sessionExpiry = -2 // not given
	if session {
		c.Bool(&f.persistent, "c,persistent", "persistent session: Clean Start 0, session kept after disconnect (see -x)")
		c.Var(expiryValue{&f.sessionExpiry}, "x,session-expiry", "SECONDS", "session expiry interval; -1: never (default -1 with -c, else 0)")
	}
	c.String(&f.cafile, "cafile", "FILE", "", "PEM file of trusted CA certificates; turns TLS on")
	c.String(&f.cert, "cert", "FILE", "", "PEM client certificate (with --key); turns TLS on")
	c.String(&f.key, "key", "FILE", "", "PEM private key of --cert")
	c.Bool(&f.insecure, "insecure", "do not check the broker's certificate or host name (testing only)")
	c.String(&f.willTopic, "will-topic", "TOPIC", "", "will message topic")
	c.String(&f.willPayload, "will-payload", "MSG", "", "will message payload")
	c.Int(&f.willQoS, "will-qos", "QOS", 0, "will message QoS")
	c.Bool(&f.willRetain, "will-retain", "retain the will message")
	c.String(&f.version, "V,protocol-version", "VERSION", "5", "MQTT version: 5 (mqttv5) or 311 (3.1.1, mqttv311)")
	c.Duration(&f.connectTimeout, "connect-timeout", "DURATION", 10*time.Second, "give up connecting after this long")
	c.Bool(&f.retry, "retry", "keep retrying the first connection (with backoff) instead of failing")
}

// expiryValue is -x: seconds, or -1 / "inf" for a session that never expires.
type expiryValue struct{ p *int64 }

func (v expiryValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatInt(*v.p, 10)
}

func (v expiryValue) Set(s string) error { return parseExpiry(s, v.p) }

func parseExpiry(s string, dst *int64) error {
	if s == "inf" || s == "∞" {
		*dst = -1
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < -1 || n > math.MaxUint32 {
		return fmt.Errorf("want seconds in [0, 4294967295], or -1 for never")
	}
	if n == math.MaxUint32 {
		n = -1
	}
	*dst = n
	return nil
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// brokerURL returns the broker URL the flags and the environment ask for.
func (f *connFlags) brokerURL(tlsWanted bool) (string, error) {
	raw := f.url
	if raw == "" && f.host == "" {
		raw = os.Getenv("TERN_BROKER")
	}
	if raw == "" && f.host == "" {
		raw = defaultBroker
	}
	var u *url.URL
	if raw != "" {
		var err error
		if u, err = parseBrokerArg(raw); err != nil {
			return "", err
		}
	} else {
		u = &url.URL{Scheme: "mqtt", Host: "localhost"}
	}
	if f.host != "" || f.port != 0 {
		if u.Scheme == "unix" {
			return "", usagef("-h/-p do not apply to a unix:// broker")
		}
		host, port := u.Hostname(), u.Port()
		if f.host != "" {
			host = f.host
		}
		if f.port != 0 {
			if f.port < 1 || f.port > 65535 {
				return "", usagef("-p %d: want a port in [1, 65535]", f.port)
			}
			port = strconv.Itoa(f.port)
		}
		u.Host = host
		if port != "" {
			u.Host = net.JoinHostPort(host, port)
		}
	}
	if tlsWanted {
		secureScheme(u)
	}
	return u.String(), nil
}

// secureScheme turns a plain scheme into its TLS form, for TLS flags given with a plain
// URL: mqtt and tcp become mqtts (port 1883 becomes 8883), ws becomes wss (80 becomes 443).
func secureScheme(u *url.URL) {
	switch u.Scheme {
	case "mqtt", "tcp":
		u.Scheme = "mqtts"
		if u.Port() == "1883" {
			u.Host = net.JoinHostPort(u.Hostname(), "8883")
		}
	case "ws":
		u.Scheme = "wss"
		if u.Port() == "80" {
			u.Host = net.JoinHostPort(u.Hostname(), "443")
		}
	}
}

// wsTransport carries ws:// and wss:// brokers (MQTT over WebSocket, the ws module). Every
// client the command makes gets it, so a ws URL works wherever a broker URL is taken. It
// costs nothing for other schemes; one value serves every client (it is safe to share).
var wsTransport = tern.WithTransport(ws.New())

// parseBrokerArg accepts a URL with a scheme the command supports, or a bare host:port.
func parseBrokerArg(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		if _, _, err := net.SplitHostPort(raw); err != nil {
			return nil, usagef("broker %q: want a URL (mqtt://host:port) or host:port", raw)
		}
		raw = "mqtt://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, usagef("broker %q: %v", raw, err)
	}
	switch u.Scheme {
	case "mqtt", "tcp", "mqtts", "tls", "ssl", "ws", "wss":
		if u.Hostname() == "" {
			return nil, usagef("broker %q: no host", raw)
		}
	case "unix":
	default:
		return nil, usagef("broker %q: unknown scheme %q (want mqtt, mqtts, tcp, tls, ws, wss or unix)", raw, u.Scheme)
	}
	return u, nil
}

// options turns the flags into client options. extra come last.
func (f *connFlags) options(extra ...tern.Option) (broker string, opts []tern.Option, err error) {
	proto, err := parseProtocol(f.version)
	if err != nil {
		return "", nil, usagef("-V %s", err)
	}
	tlsCfg, err := f.tlsConfig()
	if err != nil {
		return "", nil, err
	}
	if broker, err = f.brokerURL(tlsCfg != nil); err != nil {
		return "", nil, err
	}
	opts = []tern.Option{tern.WithBroker(broker), tern.WithConnectTimeout(f.connectTimeout), wsTransport}
	if tlsCfg != nil {
		opts = append(opts, tern.WithTLSConfig(tlsCfg))
	}
	if f.id != "" {
		opts = append(opts, tern.WithClientID(f.id))
	}
	pw, err := f.passwordValue()
	if err != nil {
		return "", nil, err
	}
	if f.user != "" || pw != nil {
		opts = append(opts, tern.WithCredentials(f.user, pw))
	}
	if f.keepAlive < 0 || f.keepAlive > math.MaxUint16 {
		return "", nil, usagef("-k %d: want seconds in [0, 65535]", f.keepAlive)
	}
	if f.keepAlive == 0 {
		opts = append(opts, tern.WithoutKeepAlive())
	} else {
		opts = append(opts, tern.WithKeepAlive(time.Duration(f.keepAlive)*time.Second))
	}
	expiry := f.sessionExpiry
	if expiry == -2 { // not given
		expiry = 0
		if f.persistent {
			expiry = -1
		}
	}
	if f.persistent {
		if f.id == "" {
			return "", nil, usagef("-c needs a client identifier (-i)")
		}
		opts = append(opts, tern.WithCleanStart(false))
	}
	if expiry == -1 {
		opts = append(opts, tern.WithSessionExpiry(time.Duration(math.MaxUint32)*time.Second))
	} else if expiry > 0 {
		opts = append(opts, tern.WithSessionExpiry(time.Duration(expiry)*time.Second))
	}
	if f.willTopic != "" {
		if f.willQoS < 0 || f.willQoS > 2 {
			return "", nil, usagef("--will-qos %d: want 0, 1 or 2", f.willQoS)
		}
		if err := packet.ValidateTopicName(f.willTopic); err != nil {
			return "", nil, usagef("--will-topic %q: %v", f.willTopic, err)
		}
		opts = append(opts, tern.WithWill(&packet.Will{Topic: f.willTopic, Payload: []byte(f.willPayload),
			QoS: byte(f.willQoS), Retain: f.willRetain}))
	} else if f.willPayload != "" || f.willRetain || f.willQoS != 0 {
		return "", nil, usagef("--will-payload, --will-qos and --will-retain need --will-topic")
	}
	if f.retry {
		opts = append(opts, tern.WithBackgroundConnect())
	}
	if proto != tern.MQTT5 {
		opts = append(opts, tern.WithProtocol(proto))
	}
	return broker, append(opts, extra...), nil
}

// parseProtocol reads a protocol version as mosquitto_pub -V, scenario files (protocol) and
// venom (protocolVersion, a protocol level) spell it. Empty means MQTT 5.
func parseProtocol(s string) (tern.Protocol, error) {
	switch s {
	case "", "5", "5.0", "mqttv5":
		return tern.MQTT5, nil
	case "311", "3.1.1", "mqttv311", "4":
		return tern.MQTT311, nil
	case "31", "3.1", "mqttv31", "3":
		return 0, fmt.Errorf("%q: MQTT 3.1 (protocol level 3) is not supported; want 5 or 311", s)
	}
	return 0, fmt.Errorf("%q: want 5 (mqttv5) or 311 (3.1.1, mqttv311)", s)
}

// v5Only returns a usage error naming the first of flags (each a comma-separated list of one
// option's names, as registered) given on c when -V asks for MQTT 3.1.1, which cannot carry
// what they set. The client would refuse it too, but only once connected.
func (f *connFlags) v5Only(c *cliFlags, flags ...string) error {
	if p, err := parseProtocol(f.version); err != nil || p != tern.MQTT311 {
		return nil // a bad -V is reported by options
	}
	for _, names := range flags {
		if c.set(names) {
			return usagef("--%s is MQTT 5 only: not available with -V %s", strings.Split(names, ",")[0], f.version)
		}
	}
	return nil
}

// passwordValue returns the password from -P, --password-file or TERN_PASSWORD, in that
// order; nil when none is given.
func (f *connFlags) passwordValue() ([]byte, error) {
	switch {
	case f.password != "":
		return []byte(f.password), nil
	case f.passwordFile != "":
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("--password-file: %w", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	if pw, ok := os.LookupEnv("TERN_PASSWORD"); ok {
		return []byte(pw), nil
	}
	return nil, nil
}

// tlsConfig returns the TLS configuration the flags ask for, or nil for none.
func (f *connFlags) tlsConfig() (*tls.Config, error) {
	if f.cafile == "" && f.cert == "" && f.key == "" && !f.insecure {
		return nil, nil
	}
	cfg := &tls.Config{InsecureSkipVerify: f.insecure, MinVersion: tls.VersionTLS12}
	if f.cafile != "" {
		pem, err := os.ReadFile(f.cafile)
		if err != nil {
			return nil, fmt.Errorf("--cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cafile %s: no PEM certificate found", f.cafile)
		}
		cfg.RootCAs = pool
	}
	if (f.cert == "") != (f.key == "") {
		return nil, usagef("--cert and --key go together")
	}
	if f.cert != "" {
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// connect creates the client and connects it: it fails within the connect timeout unless
// --retry was given, in which case the client keeps trying in the background.
func connect(ctx context.Context, opts []tern.Option) (*tern.Client, error) {
	c, err := tern.New(opts...)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		return nil, err // the client's error names the broker (without credentials)
	}
	return c, nil
}

// redactURL drops a password from a broker URL before it is shown.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}

// exitStatus reports err on stderr as one line and returns the exit status for it.
func exitStatus(stderr interface{ Write([]byte) (int, error) }, cmd string, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "tern %s: %v\n", cmd, err)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	if errors.Is(err, errInterrupted) {
		return exitInterrupted
	}
	return 1
}
