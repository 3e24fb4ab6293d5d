package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tern sub announces the client's inbound limit, 1 MiB by default, in CONNECT, and the
// broker drops larger messages for it ([MQTT-3.1.2-25]); --max-packet-size raises it.
func TestSubMaxPacketSize(t *testing.T) {
	url := startMosquitto(t)
	port := url[strings.LastIndex(url, ":")+1:]
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("b"), 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := func(args ...string) {
		t.Helper()
		all := append([]string{"-V", "mqttv5", "-h", "127.0.0.1", "-p", port, "-q", "1"}, args...)
		if out, err := exec.Command("mosquitto_pub", all...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
	}
	s := startTernSub(t, "-L", url, "-t", "mp/#", "-q", "1", "-C", "1", "-F", "%t %l")
	pub("-t", "mp/big", "-f", big)
	pub("-t", "mp/small", "-m", "s")
	if st := s.wait(t, 10*time.Second); st != 0 || s.stdout.String() != "mp/small 1\n" {
		t.Fatalf("default limit: status %d, output %q; want the big message dropped", st, s.stdout.String())
	}
	s = startTernSub(t, "-L", url, "-t", "mp/#", "-q", "1", "-C", "1", "-F", "%t %l", "--max-packet-size", "4194304")
	pub("-t", "mp/big", "-f", big)
	if st := s.wait(t, 10*time.Second); st != 0 || s.stdout.String() != "mp/big 2097152\n" {
		t.Fatalf("--max-packet-size 4194304: status %d, output %q", st, s.stdout.String())
	}
	if st, _, stderr := runTern(t, "", "sub", "-t", "a", "--max-packet-size", "8"); st != 2 || !strings.Contains(stderr, "--max-packet-size 8") {
		t.Fatalf("too small: status %d, stderr %q", st, stderr)
	}
}
