package ws_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"github.com/ternmq/tern/internal/seglog/segtest"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/ternmq/tern"
)

// TestMain starts the broker the examples use and fails the run if a goroutine of the client
// or of this package outlives the tests.
func TestMain(m *testing.M) {
	srv, addr, _, err := startMochi(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mochi WebSocket listener:", err)
		os.Exit(1)
	}
	os.Setenv("MQTT_WS_BROKER", "ws://"+addr+"/mqtt")
	code := m.Run()
	srv.Close()
	if code == 0 {
		if leaked := segtest.LeftGoroutines(5*time.Second, "ternmq/tern", "coder/websocket"); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// freeAddr returns a loopback address with a port the OS says is free. mochi's WebSocket
// listener binds by address and does not report the port it got, so the port is chosen here.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startMochi starts a mochi broker with a WebSocket listener (wss with tlsConfig) on a free
// loopback port, and a TCP listener, and waits until the ports accept. The caller closes the
// server.
func startMochi(tlsConfig *tls.Config) (srv *mqtt.Server, wsAddr, tcpAddr string, err error) {
	var lastErr error
	for range 5 { // the chosen port may be taken before mochi binds it
		addr, err := freeAddr()
		if err != nil {
			return nil, "", "", err
		}
		caps := mqtt.NewDefaultServerCapabilities()
		caps.MaximumMessageExpiryInterval = 0
		caps.Compatibilities.NoInheritedPropertiesOnAck = true
		// Queue rather than drop for a client that is away or slow (see shared BROKERS.md).
		caps.MaximumInflight = 65535
		caps.MaximumClientWritesPending = 65536
		srv := mqtt.New(&mqtt.Options{
			Capabilities: caps,
			Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
			return nil, "", "", err
		}
		ln := listeners.NewWebsocket(listeners.Config{ID: "ws", Address: addr, TLSConfig: tlsConfig})
		if err := srv.AddListener(ln); err != nil {
			return nil, "", "", err
		}
		tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
		if err := srv.AddListener(tcp); err != nil {
			return nil, "", "", err
		}
		if err := srv.Serve(); err != nil {
			return nil, "", "", err
		}
		if lastErr = waitListening(addr); lastErr == nil {
			return srv, addr, tcp.Address(), nil
		}
		srv.Close()
	}
	return nil, "", "", lastErr
}

// waitListening polls until addr accepts a TCP connection, for up to 5 s.
func waitListening(addr string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept: %w", addr, err)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

func mochi(t testing.TB, tlsConfig *tls.Config) string {
	ws, _ := mochiBoth(t, tlsConfig)
	return ws
}

// mochiBoth starts a broker for the test and returns its WebSocket and TCP addresses.
func mochiBoth(t testing.TB, tlsConfig *tls.Config) (wsAddr, tcpAddr string) {
	t.Helper()
	srv, addr, tcpAddr, err := startMochi(tlsConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return addr, tcpAddr
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// client returns a connected client, disconnected when the test ends.
func client(t testing.TB, broker string, opts ...tern.Option) *tern.Client {
	t.Helper()
	c, err := tern.New(append([]tern.Option{tern.WithBroker(broker)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

func recv(t *testing.T, ch <-chan *tern.Message) *tern.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// testCA issues server certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tern ws test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// server returns a TLS server config whose certificate names only the given DNS names and
// IP addresses.
func (ca *testCA) server(t *testing.T, dnsNames []string, ips ...string) *tls.Config {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		DNSNames: dnsNames,
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
