package main

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/cmd/tern/internal/broker"
)

// startWSBroker starts the embedded broker (tern serve's) with a WebSocket listener on a
// free loopback port; with tlsConfig the listener is wss.
func startWSBroker(t *testing.T, tlsConfig *tls.Config) *broker.Broker {
	t.Helper()
	b, err := broker.Start("127.0.0.1:0", broker.Options{WSAddr: "127.0.0.1:0", WSTLSConfig: tlsConfig})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// wsServerTLS writes a CA and a server certificate for 127.0.0.1 into a temp dir and returns
// the server's TLS configuration and the CA file.
func wsServerTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{Subject: pkix.Name{CommonName: "tern ws test CA"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	writeCert(t, dir, "server", &x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, caKey)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, filepath.Join(dir, "ca.pem")
}

// jsonTopicsPayloads returns "topic=payload" for each --json line of out.
func jsonTopicsPayloads(t *testing.T, out string) []string {
	t.Helper()
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m struct{ Topic, Payload string }
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, m.Topic+"="+m.Payload)
	}
	return got
}

// tern pub and tern sub over ws:// (MQTT over WebSocket, the ws module's transport) against
// the embedded broker's WebSocket listener, at QoS 0, 1 and 2, with a payload larger than one
// WebSocket frame of the server's default read limit (32 KiB), so the listener must read the
// frames as a stream.
func TestWSPubSubRoundTrip(t *testing.T) {
	b := startWSBroker(t, nil)
	url := b.WSURL()
	if !strings.HasPrefix(url, "ws://127.0.0.1:") {
		t.Fatalf("WSURL %q", url)
	}
	s := startTernSub(t, "-L", url, "-t", "w/#", "-q", "2", "-C", "4", "--json")
	big := strings.Repeat("b", 100<<10)
	for i, args := range [][]string{
		{"-t", "w/0", "-q", "0", "-m", "zero"},
		{"-t", "w/1", "-q", "1", "-m", "one"},
		{"-t", "w/2", "-q", "2", "-m", "two"},
		{"-t", "w/big", "-q", "1", "-m", big},
	} {
		if st, _, stderr := runTern(t, "", append([]string{"pub", "-L", url}, args...)...); st != 0 {
			t.Fatalf("pub %d: status %d: %s", i, st, stderr)
		}
	}
	if st := s.wait(t, 10*time.Second); st != 0 {
		t.Fatalf("sub: status %d: %s", st, s.stderr.String())
	}
	// Sorted: each message comes from a connection of its own, and the broker does not order
	// messages of different publishers.
	want := "w/0=zero;w/1=one;w/2=two;w/big=" + big
	if got := strings.Join(slices.Sorted(slices.Values(jsonTopicsPayloads(t, s.stdout.String()))), ";"); got != want {
		t.Fatalf("got %.200q, want %.200q", got, want)
	}
}

// The TLS flags apply to wss: --cafile verifies the broker's certificate (and turns a ws://
// URL into wss://, as it turns mqtt:// into mqtts://); without it the certificate of an
// unknown CA is refused (exit 1); --insecure skips the check.
func TestWSSUsesTLSFlags(t *testing.T) {
	srvTLS, caFile := wsServerTLS(t)
	b := startWSBroker(t, srvTLS)
	wss := b.WSURL()
	if !strings.HasPrefix(wss, "wss://") {
		t.Fatalf("WSURL %q", wss)
	}
	plain := "ws://" + strings.TrimPrefix(wss, "wss://")
	s := startTernSub(t, "-L", wss, "--cafile", caFile, "-t", "s/#", "-q", "1", "-C", "2", "--json")
	if st, _, stderr := runTern(t, "", "pub", "-L", plain, "--cafile", caFile, "-t", "s/a", "-q", "1", "-m", "verified"); st != 0 {
		t.Fatalf("pub --cafile: status %d: %s", st, stderr)
	}
	if st, _, stderr := runTern(t, "", "pub", "-L", wss, "--insecure", "-t", "s/b", "-q", "1", "-m", "unchecked"); st != 0 {
		t.Fatalf("pub --insecure: status %d: %s", st, stderr)
	}
	if st := s.wait(t, 10*time.Second); st != 0 {
		t.Fatalf("sub: status %d: %s", st, s.stderr.String())
	}
	if got := strings.Join(slices.Sorted(slices.Values(jsonTopicsPayloads(t, s.stdout.String()))), ";"); got != "s/a=verified;s/b=unchecked" {
		t.Fatalf("got %q", got)
	}
	st, _, stderr := runTern(t, "", "pub", "-L", wss, "-t", "s/c", "-m", "x", "--connect-timeout", "5s")
	if st != 1 || !strings.Contains(stderr, "certificate") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("wss without --cafile: status %d, stderr %q; want 1 and a certificate error", st, stderr)
	}
}

// tern bench pubsub over ws: every message arrives exactly once at each subscriber.
func TestWSBenchPubSub(t *testing.T) {
	url := startWSBroker(t, nil).WSURL()
	for _, qos := range []int{0, 1} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			code, out, errOut, rep := runBenchJSON(t, "pubsub", "-L", url, "-c", "2", "--subs", "2", "-n", "500",
				"-q", fmt.Sprint(qos), "--inflight", "8")
			if code != 0 || rep == nil {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if rep.Sent != 1000 || rep.Expected != 2000 || rep.Received != 2000 || rep.Lost != 0 || rep.Duplicates != 0 {
				t.Fatalf("sent %d expected %d received %d lost %d dup %d\n%s", rep.Sent, rep.Expected, rep.Received, rep.Lost, rep.Duplicates, out)
			}
			if rep.ConnsUp != 4 || !strings.Contains(rep.Conditions.Broker, "ws://") {
				t.Fatalf("connections up %d, broker %q", rep.ConnsUp, rep.Conditions.Broker)
			}
		})
	}
}

// A scenario's clients connect over ws:// given with --broker, and over wss:// with the
// client's tls keys.
func TestWSRunScenario(t *testing.T) {
	url := startWSBroker(t, nil).WSURL()
	out, errs, st := runScenarios(t, "--broker", url, scenarios+"pass/sensors.yml")
	if st != 0 || !strings.Contains(out, "1 scenarios: 1 passed, 0 failed") {
		t.Fatalf("status %d\n%s%s", st, out, errs)
	}

	srvTLS, caFile := wsServerTLS(t)
	wss := startWSBroker(t, srvTLS).WSURL()
	dir := filepath.Dir(caFile)
	sc := filepath.Join(dir, "wss.yml")
	os.WriteFile(sc, []byte(`clients:
  c: {broker: "`+wss+`", tls: {ca: ca.pem}}
steps:
  - subscribe: {client: c, filters: ["x/#"], qos: 1}
  - connect: c
  - publish: {client: c, topic: x/y, payload: over-wss, qos: 1}
  - expect: {on: x/#, count: 1, all: {payload: over-wss}}
`), 0o644)
	out, errs, st = runScenarios(t, sc)
	if st != 0 {
		t.Fatalf("wss scenario: status %d\n%s%s", st, out, errs)
	}
}

// The demo runs over ws:// too: the fault proxy forwards the WebSocket's TCP stream, so its
// cuts hit a WebSocket connection, and nothing is lost.
func TestWSDemo(t *testing.T) {
	url := startWSBroker(t, nil).WSURL()
	var stdout, stderr syncBuffer
	st := dispatch([]string{"demo", "--broker", url, "--messages", "600", "--cuts", "2", "--wait", "30s"}, &stdout, &stderr)
	if st != 0 || !strings.Contains(stdout.String(), "PASS") {
		t.Fatalf("status %d\nstdout:\n%s\nstderr:\n%s", st, stdout.String(), stderr.String())
	}
}

// Wrong URLs fail with one clear line: a scheme the command does not know, or a ws:// URL
// with no host, is a usage error (2) naming the schemes it takes; a ws:// URL at a port that
// speaks plain MQTT fails the WebSocket handshake (1).
func TestWSBadURL(t *testing.T) {
	b := startWSBroker(t, nil)
	tcpAsWS := "ws://" + b.Addr() + "/mqtt"
	for _, tc := range []struct {
		args   []string
		status int
		msg    string
	}{
		{[]string{"pub", "-t", "a", "-m", "x", "-L", "http://127.0.0.1:1/mqtt"}, 2, `unknown scheme "http" (want mqtt, mqtts, tcp, tls, ws, wss or unix)`},
		{[]string{"sub", "-t", "a", "-L", "wss:///mqtt"}, 2, "no host"},
		{[]string{"bench", "pubsub", "-n", "10", "-L", "ftp://127.0.0.1:1"}, 2, `unknown scheme "ftp"`},
		{[]string{"pub", "-t", "a", "-m", "x", "-L", tcpAsWS, "--connect-timeout", "5s"}, 1, "websocket handshake"},
		{[]string{"bench", "pubsub", "-n", "10", "-L", tcpAsWS, "--connect-timeout", "5s"}, 1, "websocket handshake"},
		{[]string{"demo", "--broker", "wss://127.0.0.1:1/mqtt"}, 2, "plain TCP only"},
		{[]string{"serve", "--ws", "0.0.0.0:8080"}, 2, "only loopback"},
	} {
		st, _, stderr := runTern(t, "", tc.args...)
		if st != tc.status || !strings.Contains(stderr, tc.msg) {
			t.Errorf("tern %q: status %d, stderr %q; want %d and %q", tc.args, st, stderr, tc.status, tc.msg)
		}
	}
}

// tern serve --ws: the embedded broker, run as users run it, serves MQTT over WebSocket beside
// TCP (a message published over TCP reaches a subscriber over ws), prints both URLs, and
// ends with exit status 0 on Ctrl-C.
func TestServeWS(t *testing.T) {
	c := startChild(t, nil, "serve", "--addr", "127.0.0.1:0", "--ws", "127.0.0.1:0")
	c.stdout.waitFor(t, "/mqtt\n", 10*time.Second)
	var tcpURL, wsURL string
	for _, l := range strings.Split(c.stdout.String(), "\n") {
		if u, ok := strings.CutPrefix(l, "tern serve: listening on "); ok {
			if strings.HasPrefix(u, "ws://") {
				wsURL = u
			} else {
				tcpURL = u
			}
		}
	}
	if !strings.HasPrefix(tcpURL, "mqtt://127.0.0.1:") || !strings.HasPrefix(wsURL, "ws://127.0.0.1:") {
		t.Fatalf("stdout %q", c.stdout.String())
	}
	s := startTernSub(t, "-L", wsURL, "-t", "serve/#", "-q", "1", "-C", "1", "-v")
	if st, _, stderr := runTern(t, "", "pub", "-L", tcpURL, "-t", "serve/x", "-q", "1", "-m", "tcp to ws"); st != 0 {
		t.Fatalf("pub: status %d: %s", st, stderr)
	}
	if st := s.wait(t, 10*time.Second); st != 0 || s.stdout.String() != "serve/x tcp to ws\n" {
		t.Fatalf("sub: status %d, stdout %q, stderr %s", st, s.stdout.String(), s.stderr.String())
	}
	c.cmd.Process.Signal(os.Interrupt)
	if st := c.status(t, 10*time.Second); st != 0 {
		t.Fatalf("serve: status %d; stderr %q", st, c.stderr.String())
	}
}
