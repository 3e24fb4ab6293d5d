package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert creates a key pair signed by parent (self-signed when parent is nil) and writes
// NAME.pem and NAME.key into dir.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o644)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// TLS with a client certificate against a Mosquitto that requires one; a client without
// a certificate fails the handshake.
func TestRunTLS(t *testing.T) {
	url, dir := startTLSMosquitto(t)

	ok := filepath.Join(dir, "tls.yml")
	os.WriteFile(ok, []byte(`name: tls with a client certificate
clients:
  c: {tls: {ca: ca.pem, cert: client.pem, key: client.key}}
steps:
  - subscribe: {client: c, filters: ["tls/#"], qos: 1}
  - connect: c
  - publish: {client: c, topic: tls/x, payload: secret, qos: 1}
  - expect: {on: tls/#, count: 1, all: {payload: secret}}
`), 0o644)
	out, errs, st := runScenarios(t, "--broker", url, ok)
	if st != 0 {
		t.Fatalf("status %d\n%s%s", st, out, errs)
	}

	nocert := filepath.Join(dir, "nocert.yml")
	os.WriteFile(nocert, []byte("clients:\n  c: {tls: {ca: ca.pem}, connect_timeout: 5s}\nsteps:\n  - connect: c\n"), 0o644)
	out, errs, st = runScenarios(t, "--broker", url, nocert)
	if st != 1 || !strings.Contains(out, nocert+":4:12: connect: connect c: ") {
		t.Fatalf("status %d, want 1 and a connect failure\n%s%s", st, out, errs)
	}
}

// startTLSMosquitto writes a CA, a server certificate for 127.0.0.1 and a client
// certificate (ca, server and client .pem/.key in dir), and starts a Mosquitto with a TLS
// listener that requires a client certificate signed by the CA. It returns the listener's
// mqtts:// URL and dir.
func startTLSMosquitto(t *testing.T) (url, dir string) {
	t.Helper()
	dir = t.TempDir()
	os.Chmod(dir, 0o755) // Mosquitto may drop to its own user: let it read the files
	os.Chmod(filepath.Dir(dir), 0o755)
	ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{Subject: pkix.Name{CommonName: "tern test CA"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	writeCert(t, dir, "server", &x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, caKey)
	writeCert(t, dir, "client", &x509.Certificate{Subject: pkix.Name{CommonName: "tern-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, caKey)
	url = startMosquitto(t, "cafile "+filepath.Join(dir, "ca.pem"), "certfile "+filepath.Join(dir, "server.pem"),
		"keyfile "+filepath.Join(dir, "server.key"), "require_certificate true")
	return strings.Replace(url, "mqtt://", "mqtts://", 1), dir
}
