package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

// firstConnect returns the CONNECT packet of the proxy's connection num, as recorded.
func firstConnect(t *testing.T, px *faultproxy.Proxy, num int) *packet.Connect {
	t.Helper()
	var up []byte
	for _, s := range px.Recording() {
		if s.Conn == num && s.Dir == faultproxy.Up {
			up = append(up, s.Data...)
		}
	}
	if len(up) < 2 {
		t.Fatalf("connection %d sent nothing", num)
	}
	rl, n := 0, 1
	for shift := 0; n < len(up); n++ {
		rl |= int(up[n]&0x7f) << shift
		shift += 7
		if up[n] < 0x80 {
			break
		}
	}
	p, err := packet.DecodeBytes(up[:n+1+rl])
	if err != nil {
		t.Fatal(err)
	}
	c, ok := p.(*packet.Connect)
	if !ok {
		t.Fatalf("first packet %T", p)
	}
	return c
}

// The connection flags reach the wire as the MQTT 5 CONNECT fields they name: -i, -k, -c,
// -x, -u with each password source, and the will flags.
func TestConnectFlagsOnTheWire(t *testing.T) {
	url := startMosquitto(t)
	px := faultproxy.New(t, strings.TrimPrefix(url, "mqtt://"))
	px.Record(true)
	pwfile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwfile, []byte("from-file\n"), 0o600)
	run := func(env string, args ...string) {
		t.Helper()
		if env != "" {
			t.Setenv("TERN_PASSWORD", env)
		} else {
			os.Unsetenv("TERN_PASSWORD")
		}
		all := append([]string{"pub", "-L", px.URL(), "-t", "w/a", "-m", "x", "-q", "1"}, args...)
		if st, _, stderr := runTern(t, "", all...); st != 0 {
			t.Fatalf("%q: status %d: %s", all, st, stderr)
		}
	}
	run("", "-i", "id-1", "-k", "7", "-c", "-x", "120", "-u", "user", "--password-file", pwfile,
		"--will-topic", "will/t", "--will-payload", "bye", "--will-qos", "1", "--will-retain")
	c := firstConnect(t, px, 1)
	if c.ClientID != "id-1" || c.KeepAlive != 7 || c.CleanStart || c.SessionExpiry != 120 ||
		c.Username != "user" || string(c.Password) != "from-file" || c.Will == nil ||
		c.Will.Topic != "will/t" || string(c.Will.Payload) != "bye" || c.Will.QoS != 1 || !c.Will.Retain {
		t.Errorf("CONNECT 1: %+v will %+v", c, c.Will)
	}
	run("from-env", "-i", "id-2", "-c", "-k", "0", "-u", "user")
	c = firstConnect(t, px, 2)
	if c.ClientID != "id-2" || c.KeepAlive != 0 || c.CleanStart || c.SessionExpiry != 0xFFFFFFFF ||
		string(c.Password) != "from-env" || c.Will != nil {
		t.Errorf("CONNECT 2 (-c without -x: never expires; $TERN_PASSWORD): %+v", c)
	}
	run("from-env", "-x", "30", "-u", "user", "-P", "from-flag")
	c = firstConnect(t, px, 3)
	if !c.CleanStart || c.SessionExpiry != 30 || string(c.Password) != "from-flag" || c.KeepAlive != 60 {
		t.Errorf("CONNECT 3 (-x alone, -P before $TERN_PASSWORD, default -k 60): %+v", c)
	}
}

// --password-file and $TERN_PASSWORD are accepted by a Mosquitto with a password file; a
// wrong one is refused with the broker's reason code.
func TestPasswordSourcesAgainstMosquitto(t *testing.T) {
	url := startPasswordMosquitto(t, "alice", "s3cret")
	pwfile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwfile, []byte("s3cret\r\n"), 0o600)
	base := []string{"pub", "-L", url, "-t", "pw/t", "-m", "x", "-u", "alice"}
	os.Unsetenv("TERN_PASSWORD")
	if st, _, stderr := runTern(t, "", append(base, "--password-file", pwfile)...); st != 0 {
		t.Fatalf("--password-file: status %d: %s", st, stderr)
	}
	t.Setenv("TERN_PASSWORD", "s3cret")
	if st, _, stderr := runTern(t, "", base...); st != 0 {
		t.Fatalf("$TERN_PASSWORD: status %d: %s", st, stderr)
	}
	t.Setenv("TERN_PASSWORD", "wrong")
	if st, _, stderr := runTern(t, "", base...); st != 1 || !strings.Contains(stderr, "not authorized (0x87)") {
		t.Fatalf("wrong $TERN_PASSWORD: status %d: %s", st, stderr)
	}
	os.Unsetenv("TERN_PASSWORD")
	if st, _, stderr := runTern(t, "", append(base, "--password-file", filepath.Join(t.TempDir(), "none"))...); st != 1 ||
		!strings.Contains(stderr, "--password-file") {
		t.Fatalf("missing password file: status %d: %s", st, stderr)
	}
}

// TLS round trips for pub and sub: a client certificate with --cafile, --cert and --key;
// --insecure connects to a broker whose certificate does not name the host; without the CA
// the handshake fails.
func TestPubSubTLS(t *testing.T) {
	url, dir := startTLSMosquitto(t)
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	port := url[strings.LastIndex(url, ":")+1:]
	tlsArgs := []string{"--cafile", ca, "--cert", cert, "--key", key}
	s := startTernSub(t, append([]string{"-h", "127.0.0.1", "-p", port, "-t", "tls/#", "-q", "1", "-C", "2", "-v"}, tlsArgs...)...)
	if st, _, stderr := runTern(t, "", append([]string{"pub", "-h", "127.0.0.1", "-p", port, "-t", "tls/a", "-q", "1", "-m", "one"}, tlsArgs...)...); st != 0 {
		t.Fatalf("pub --cafile: status %d: %s", st, stderr)
	}
	// The certificate names 127.0.0.1, not localhost: only --insecure gets through.
	local := "mqtts://localhost:" + port
	if st, _, stderr := runTern(t, "", "pub", "-L", local, "-t", "tls/b", "-q", "1", "-m", "two", "--insecure", "--cert", cert, "--key", key); st != 0 {
		t.Fatalf("pub --insecure: status %d: %s", st, stderr)
	}
	if st := s.wait(t, 10*time.Second); st != 0 || s.stdout.String() != "tls/a one\ntls/b two\n" {
		t.Fatalf("sub over TLS: status %d, output %q, stderr %s", st, s.stdout.String(), s.stderr.String())
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-L", local, "--cafile", ca, "--cert", cert, "--key", key}, "certificate"},
		{[]string{"-L", url, "--cert", cert, "--key", key}, "certificate"},
		{[]string{"-L", url, "--cafile", ca}, ""}, // the broker requires a client certificate
	} {
		args := append([]string{"sub", "-t", "tls/#", "--connect-timeout", "5s"}, tc.args...)
		st, _, stderr := runTern(t, "", args...)
		if st != 1 || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%q: status %d, stderr %q; want 1 and one line with %q", args, st, stderr, tc.want)
		}
	}
}

// The will flags: a subscriber sees the will, retained, after the tern process is killed
// (kill -9) and after its connection is cut. [MQTT-3.1.2-8]: the will is published when
// the connection closes without DISCONNECT.
func TestWillAfterKillAndCut(t *testing.T) {
	url := startMosquitto(t)
	port := url[strings.LastIndex(url, ":")+1:]
	will := []string{"--will-topic", "will/t", "--will-qos", "1", "--will-retain"}
	ms := startMosqSub(t, url, "-q", "1", "-t", "will/t", "-C", "1", "-F", "%t|%q|%p")
	c := startChild(t, nil, append([]string{"sub", "-d", "-L", url, "-t", "x/#", "--will-payload", "killed"}, will...)...)
	c.stderr.waitFor(t, "subscribed to", 10*time.Second)
	c.cmd.Process.Kill()
	if got := ms.lines(t, 10*time.Second); len(got) != 1 || got[0] != "will/t|1|killed" {
		t.Fatalf("after kill -9: %q", got)
	}

	px := faultproxy.New(t, "127.0.0.1:"+port)
	ms = startMosqSub(t, url, "-q", "1", "-t", "will/t", "-C", "2", "-F", "%t|%q|%r|%p") // the retained will, then the new one
	s := startTernSub(t, append([]string{"-L", px.URL(), "-t", "x/#", "-C", "1", "--will-payload", "cut"}, will...)...)
	px.Cut()
	if got := ms.lines(t, 10*time.Second); len(got) != 2 || got[0] != "will/t|1|1|killed" || got[1] != "will/t|1|0|cut" {
		t.Fatalf("after the cut: %q", got)
	}
	// The sub reconnects by itself; a retained message reaches it whether it subscribed
	// again before or after this publish, and ends it (-C 1).
	if out, err := exec.Command("mosquitto_pub", "-V", "mqttv5", "-h", "127.0.0.1", "-p", port, "-t", "x/end", "-r", "-m", "end").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	if st := s.wait(t, 10*time.Second); st != 0 || s.stdout.String() != "end\n" {
		t.Fatalf("sub after the cut: status %d, output %q", st, s.stdout.String())
	}
}
