package tern

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// testPKI is a throwaway certificate authority with a server and a client certificate.
type testPKI struct {
	dir    string
	pool   *x509.CertPool
	client tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tern test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	sc, sk := issue("127.0.0.1", 2, x509.ExtKeyUsageServerAuth)
	write("server.pem", sc)
	write("server.key", sk)
	cc, ck := issue("tern-client", 3, x509.ExtKeyUsageClientAuth)
	client, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{dir: dir, pool: pool, client: client}
}

// TLS with a client certificate against Mosquitto requiring one.
func TestTLSClientCertificate(t *testing.T) {
	pki := newTestPKI(t)
	b := brokertest.StartMosquitto(t, brokertest.Config{Extra: []string{
		"cafile " + filepath.Join(pki.dir, "ca.pem"),
		"certfile " + filepath.Join(pki.dir, "server.pem"),
		"keyfile " + filepath.Join(pki.dir, "server.key"),
		"require_certificate true",
	}})
	url := "mqtts://" + b.Addr
	ctx := testCtx(t)
	c := newTestClient(t, url, WithTLSConfig(&tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}))
	ch, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "tls", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, PublishOptions{Topic: "tls", Payload: []byte("secret"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch); string(m.Payload) != "secret" {
		t.Fatalf("got %q", m.Payload)
	}

	// Without the client certificate the handshake fails, with an error rather than a hang.
	bad, err := New(WithBroker(url), WithTLSConfig(&tls.Config{RootCAs: pki.pool}), WithConnectTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Connect(ctx); err == nil {
		bad.Disconnect(ctx)
		t.Fatal("connected without a client certificate")
	}
}

func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "mqtt.sock")
	b := brokertest.StartMosquitto(t, brokertest.Config{Extra: []string{"listener 0 " + sock}})
	_ = b
	ctx := testCtx(t)
	c := newTestClient(t, "unix://"+sock)
	ch, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "unix", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, PublishOptions{Topic: "unix", Payload: []byte("local"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch); string(m.Payload) != "local" {
		t.Fatalf("got %q", m.Payload)
	}
}

func TestConnectRefusedIsNotHang(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now
	c, err := New(WithBroker("mqtt://"+addr), WithConnectTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Connect(testCtx(t))
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("got %v, want a dial error", err)
	}
	for qos := byte(0); qos <= 2; qos++ {
		if err := c.Publish(testCtx(t), PublishOptions{Topic: "x", QoS: qos}); !errors.Is(err, ErrNotConnected) {
			t.Fatalf("QoS %d publish on a never-connected client: %v", qos, err)
		}
	}
	// A subscription may be made before the first connection: it waits for one, and
	// Disconnect ends it.
	_, s, err := c.Subscribe(testCtx(t), []TopicFilter{{Topic: "x"}})
	if err != nil {
		t.Fatalf("subscribe on a never-connected client: %v", err)
	}
	c.Disconnect(testCtx(t))
	if err := s.Wait(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("subscription after Disconnect: %v", err)
	}
}
