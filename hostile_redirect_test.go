package tern

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// Server redirects (MQTT 5 §4.11) from a broker that may be hostile. The promises defended:
// a redirect never lowers the transport's security, so credentials never leave in clear;
// TLS to a redirect target verifies the target's name; the configured brokers are never
// replaced; a redirect loop backs off.

// redirectCA issues certificates for the redirect tests.
type redirectCA struct {
	pool *x509.CertPool
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newRedirectCA(t *testing.T) *redirectCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tern redirect CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &redirectCA{pool: pool, cert: cert, key: key}
}

// server issues a server certificate valid for the given DNS names and IP addresses only.
func (ca *redirectCA) server(t *testing.T, serial int64, dns []string, ips ...net.IP) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "tern redirect server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		DNSNames: dns, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

var loopback = net.ParseIP("127.0.0.1")

// newTLSPeer is a scripted peer behind TLS with cert.
func newTLSPeer(t *testing.T, cert tls.Certificate) *peer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	return servePeer(t, ln)
}

func (p *peer) port() string { return strconv.Itoa(p.ln.Addr().(*net.TCPAddr).Port) }

// recorder is a plain TCP listener that counts connections and bytes, and answers nothing.
type recorder struct {
	ln    net.Listener
	conns atomic.Int64
	bytes atomic.Int64
	wg    sync.WaitGroup
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	var mu sync.Mutex
	var open []net.Conn
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				n, _ := io.Copy(io.Discard, nc)
				r.bytes.Add(n)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, nc := range open {
			nc.Close()
		}
		mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *recorder) addr() string { return r.ln.Addr().String() }

// errorLog collects what the connect-error callback receives.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) add(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }

func (l *errorLog) has(target error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// A TLS broker redirecting to plain TCP (by DISCONNECT or by CONNACK, 0x9C or 0x9D) is not
// followed: the plain listener receives nothing at all (no CONNECT, no credentials), the
// refusal is counted and reported, and the client goes back to the configured broker over
// TLS with its credentials.
func TestHostileRedirectTLSDowngradeRefused(t *testing.T) {
	ca := newRedirectCA(t)
	for _, tc := range []struct {
		name    string
		connack bool // the redirect comes in CONNACK rather than DISCONNECT
		code    packet.ReasonCode
	}{
		{"disconnect-server-moved", false, packet.ServerMoved},
		{"disconnect-use-another", false, packet.UseAnotherServer},
		{"connack-server-moved", true, packet.ServerMoved},
		{"connack-use-another", true, packet.UseAnotherServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTLSPeer(t, ca.server(t, 2, nil, loopback))
			plain := newRecorder(t)
			ref := "mqtt://" + plain.addr()
			var errs errorLog
			// In the background, so that the peer's TLS handshake can run.
			opts := append([]Option{WithBroker("mqtts://127.0.0.1:" + a.port()),
				WithTLSConfig(&tls.Config{RootCAs: ca.pool}), WithCredentials("user", []byte("secret")),
				WithStats(), WithOnConnectError(errs.add), WithBackgroundConnect()}, fastOpts...)
			c, err := New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Connect(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Disconnect(context.Background()) })
			pc := a.accept()
			pc.read() // CONNECT
			if tc.connack {
				pc.send(&packet.Connack{ReasonCode: tc.code, ServerReference: ref})
			} else {
				pc.send(&packet.Connack{})
				pc.send(&packet.Disconnect{ReasonCode: tc.code, ServerReference: ref})
			}
			// The next connection comes back to the configured broker, over TLS.
			pc2 := a.accept()
			cp, ok := pc2.read().(*packet.Connect)
			if !ok || cp.Username != "user" || string(cp.Password) != "secret" {
				t.Fatalf("second CONNECT %+v", cp)
			}
			pc2.send(&packet.Connack{})
			waitFor(t, c.Connected)
			if n, b := plain.conns.Load(), plain.bytes.Load(); n != 0 || b != 0 {
				t.Fatalf("the plain listener got %d connections, %d bytes", n, b)
			}
			if got := c.Stats().RedirectsRefused; got != 1 {
				t.Fatalf("RedirectsRefused %d, want 1", got)
			}
			c.Disconnect(testCtx(t)) // runs the callbacks already posted
			if !errs.has(ErrRedirectRefused) {
				t.Fatalf("connect-error callback did not get ErrRedirectRefused: %v", errs.errs)
			}
		})
	}
}

// Redirects that keep the transport's security are followed: a URL with the same scheme,
// and a host:port reference, which keeps TLS.
func TestRedirectKeepsTLS(t *testing.T) {
	ca := newRedirectCA(t)
	for _, tc := range []struct {
		name string
		ref  func(b *peer) string
	}{
		{"same-scheme-url", func(b *peer) string { return "mqtts://127.0.0.1:" + b.port() }},
		{"host-port", func(b *peer) string { return "127.0.0.1:" + b.port() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTLSPeer(t, ca.server(t, 2, nil, loopback))
			b := newTLSPeer(t, ca.server(t, 3, nil, loopback))
			c, pc, _ := connectPeerURL(t, a, "mqtts://127.0.0.1:"+a.port(), &packet.Connack{},
				WithTLSConfig(&tls.Config{RootCAs: ca.pool}))
			pc.send(&packet.Disconnect{ReasonCode: packet.UseAnotherServer, ServerReference: tc.ref(b)})
			b.handshake(&packet.Connack{}) // a plain CONNECT would not get through B's TLS
			want := "mqtts://127.0.0.1:" + b.port()
			waitFor(t, func() bool { return c.Connected() && c.Info().Broker == want })
		})
	}
}

// TLS to a redirect target verifies the target's name, not the configured server name: the
// client configured with ServerName "a.test" and sent to 127.0.0.1 connects to a server whose
// certificate names 127.0.0.1, and refuses one whose certificate names only a.test (it could
// be any holder of A's certificate); the client then goes back to A.
func TestRedirectVerifiesTargetName(t *testing.T) {
	ca := newRedirectCA(t)
	for _, tc := range []struct {
		name   string
		bCert  tls.Certificate
		follow bool
	}{
		{"target-name-matches", ca.server(t, 3, nil, loopback), true},
		{"only-old-name-matches", ca.server(t, 4, []string{"a.test"}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTLSPeer(t, ca.server(t, 2, []string{"a.test"}))
			b := newTLSPeer(t, tc.bCert)
			aURL := "mqtts://127.0.0.1:" + a.port()
			c, pc, _ := connectPeerURL(t, a, aURL, &packet.Connack{},
				WithTLSConfig(&tls.Config{RootCAs: ca.pool, ServerName: "a.test"}))
			if tc.follow {
				pc.send(&packet.Disconnect{ReasonCode: packet.UseAnotherServer, ServerReference: "127.0.0.1:" + b.port()})
				b.handshake(&packet.Connack{})
				waitFor(t, func() bool { return c.Connected() && c.Info().Broker == "mqtts://127.0.0.1:"+b.port() })
				return
			}
			// B's side of the TLS handshake runs on its first read, which must fail.
			got := make(chan error, 1)
			go func() {
				bc := <-b.conns
				_, err := bc.tryRead(10 * time.Second)
				got <- err
			}()
			pc.send(&packet.Disconnect{ReasonCode: packet.UseAnotherServer, ServerReference: "127.0.0.1:" + b.port()})
			if err := <-got; err == nil {
				t.Fatal("B received a packet over a certificate for another name")
			}
			a.handshake(&packet.Connack{})
			waitFor(t, func() bool { return c.Connected() && c.Info().Broker == aURL })
		})
	}
}

// connectPeerURL is connectPeer with the broker URL given (a TLS one, for instance).
func connectPeerURL(t *testing.T, p *peer, broker string, ca *packet.Connack, opts ...Option) (*Client, *peerConn, *packet.Connect) {
	t.Helper()
	return connectPeer(t, p, ca, append([]Option{WithBroker(broker)}, append(fastOpts, opts...)...)...)
}

// A redirect target that cannot be reached sends the client back to its configured broker;
// 0x9D does not replace the configured list: the moved-to server is the first choice only
// while it answers.
func TestRedirectFallsBackToConfiguredBrokers(t *testing.T) {
	t.Run("unreachable-target", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close() // nothing listens there now
		a := newPeer(t)
		c, pc, _ := connectPeer(t, a, &packet.Connack{}, fastOpts...)
		pc.send(&packet.Disconnect{ReasonCode: packet.ServerMoved, ServerReference: "mqtt://" + dead})
		a.handshake(&packet.Connack{})
		waitFor(t, func() bool { return c.Connected() && c.Info().Broker == a.url() })
	})
	t.Run("moved-target-dies", func(t *testing.T) {
		a, b := newPeer(t), newPeer(t)
		c, pc, _ := connectPeer(t, a, &packet.Connack{}, fastOpts...)
		pc.send(&packet.Disconnect{ReasonCode: packet.ServerMoved, ServerReference: b.url()})
		pb, _ := b.handshake(&packet.Connack{})
		waitFor(t, func() bool { return c.Connected() && c.Info().Broker == b.url() })
		// While B answers, reconnects go to B (0x9D: the server moved).
		pb.nc.Close()
		pb, _ = b.handshake(&packet.Connack{})
		waitFor(t, func() bool { return c.Connected() && c.Info().Broker == b.url() })
		// B goes away: back to the configured A.
		b.ln.Close()
		pb.nc.Close()
		a.handshake(&packet.Connack{})
		waitFor(t, func() bool { return c.Connected() && c.Info().Broker == a.url() })
	})
}

// redirector answers every CONNECT with CONNACK 0x9C pointing at another server.
func redirector(t *testing.T, count *atomic.Int64, ref func() string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			count.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				r := packet.NewReader(nc, 4096)
				if f, err := r.ReadFrame(); err == nil {
					f.Release()
					nc.Write((&packet.Connack{ReasonCode: packet.UseAnotherServer, ServerReference: ref()}).AppendTo(nil))
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// recordingBackoff records the attempt numbers it is asked about and calls at when one is
// asked.
type recordingBackoff struct {
	mu       sync.Mutex
	attempts []int
	at       func(attempt int)
}

func (b *recordingBackoff) Delay(attempt int) time.Duration {
	b.mu.Lock()
	b.attempts = append(b.attempts, attempt)
	b.mu.Unlock()
	if b.at != nil {
		b.at(attempt)
	}
	return time.Millisecond
}

// Two servers redirecting to each other in CONNACK: an attempt stops at the loop (A, B, and
// not A again) and the next attempt waits for the backoff, which grows.
func TestHostileRedirectLoopBacksOff(t *testing.T) {
	var conns atomic.Int64
	var aAddr, bAddr string
	aAddr = redirector(t, &conns, func() string { return "mqtt://" + bAddr })
	bAddr = redirector(t, &conns, func() string { return "mqtt://" + aAddr })
	atThird := make(chan int64, 1)
	bo := &recordingBackoff{at: func(attempt int) {
		if attempt == 3 {
			atThird <- conns.Load() // attempts 1 and 2 are over, 3 has not begun
		}
	}}
	c, err := New(WithBroker("mqtt://"+aAddr), WithBackgroundConnect(), WithReconnectBackoff(bo))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	var n int64
	select {
	case n = <-atThird:
	case <-time.After(10 * time.Second):
		t.Fatal("no third attempt within 10s")
	}
	c.Disconnect(testCtx(t))
	if n != 4 {
		t.Fatalf("%d connections in two attempts, want 4 (A, B per attempt; the loop back to A not followed)", n)
	}
	bo.mu.Lock()
	defer bo.mu.Unlock()
	if len(bo.attempts) < 2 || bo.attempts[0] != 2 || bo.attempts[1] != 3 {
		t.Fatalf("backoff asked for attempts %v, want 2, 3, ...: each attempt waits longer", bo.attempts)
	}
}

// IgnoreRedirects keeps the client on its configured broker; RedirectAllowList follows only
// the hosts it names.
func TestRedirectPolicy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy func(b *peer) RedirectPolicy
		follow bool
	}{
		{"ignore", func(*peer) RedirectPolicy { return IgnoreRedirects }, false},
		{"allow-list-names-target", func(b *peer) RedirectPolicy {
			return RedirectAllowList("example.invalid", "127.0.0.1:"+b.port())
		}, true},
		{"allow-list-other-port", func(b *peer) RedirectPolicy { return RedirectAllowList("127.0.0.1:1") }, false},
		{"custom-func", func(b *peer) RedirectPolicy {
			return func(from, to *url.URL) bool { return to.Port() == b.port() && from.Scheme == "mqtt" }
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newPeer(t), newPeer(t)
			c, pc, _ := connectPeer(t, a, &packet.Connack{}, append(fastOpts, WithRedirectPolicy(tc.policy(b)))...)
			pc.send(&packet.Disconnect{ReasonCode: packet.UseAnotherServer, ServerReference: b.url()})
			want := a
			if tc.follow {
				want = b
			}
			want.handshake(&packet.Connack{})
			waitFor(t, func() bool { return c.Connected() && c.Info().Broker == want.url() })
			if refused := c.Stats().RedirectsRefused; (refused == 0) != tc.follow {
				t.Fatalf("RedirectsRefused %d", refused)
			}
		})
	}
}

// The security rule by scheme: never from TLS (or a unix socket) to a plain transport, never
// from the network to a unix socket.
func TestRedirectSafeSchemes(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"mqtts://a:8883", "mqtts://b:8883", true},
		{"mqtts://a:8883", "tls://b:8883", true},
		{"mqtt://a:1883", "mqtts://b:8883", true},
		{"mqtt://a:1883", "ws://b/mqtt", true},
		{"ws://a/mqtt", "wss://b/mqtt", true},
		{"wss://a/mqtt", "mqtts://b:8883", true},
		{"unix:///run/a.sock", "unix:///run/b.sock", true},
		{"unix:///run/a.sock", "mqtts://b:8883", true},
		{"mqtts://a:8883", "mqtt://b:1883", false},
		{"tls://a:8883", "tcp://b:1883", false},
		{"wss://a/mqtt", "ws://b/mqtt", false},
		{"mqtts://a:8883", "ws://b/mqtt", false},
		{"unix:///run/a.sock", "mqtt://b:1883", false},
		{"mqtt://a:1883", "unix:///run/b.sock", false},
		{"mqtts://a:8883", "unix:///run/b.sock", false},
	} {
		from, _ := parseBroker(tc.from)
		to, _ := parseBroker(tc.to)
		err := redirectSafe(from, to)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrRedirectRefused)) {
			t.Errorf("%s -> %s: %v, want allowed=%v", tc.from, tc.to, err, tc.ok)
		}
	}
	// A host:port reference takes the sender's scheme, so TLS stays TLS.
	from, _ := parseBroker("mqtts://user:pw@a:8883")
	if u, err := resolveReference(from, "b:9999"); err != nil || u.String() != "mqtts://b:9999" {
		t.Fatalf("resolveReference = %v, %v; want mqtts://b:9999 without the user information", u, err)
	}
}
