package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// MQTT 3.1.1 from the command line (-V 311, scenario protocol, venom protocolVersion) against
// Mosquitto, whose log says which protocol each client spoke ("p2" is 3.1.1).

func requireP2(t *testing.T, b *brokertest.Mosquitto, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if !strings.Contains(b.Log(), " as "+id+" (p2,") {
			t.Errorf("Mosquitto did not log %s as a 3.1.1 (p2) client:\n%s", id, b.Log())
		}
	}
}

// tern pub and tern sub with -V 311 and -V mqttv311 talk 3.1.1, at QoS 0, 1 and 2, and
// pub --queue (the durable queue) too.
func TestV311PubSubMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	s := startTernSub(t, "-L", b.URL, "-V", "311", "-i", "v311-cli-sub", "-q", "2", "-t", "v311cli/#", "-v", "-C", "4")
	for i, args := range [][]string{
		{"-V", "311", "-i", "v311-cli-q0", "-q", "0", "-t", "v311cli/a", "-m", "zero"},
		{"-V", "mqttv311", "-i", "v311-cli-q1", "-q", "1", "-t", "v311cli/b", "-m", "one"},
		{"-V", "3.1.1", "-i", "v311-cli-q2", "-q", "2", "-t", "v311cli/c", "-m", "two"},
		{"-V", "311", "-i", "v311-cli-queue", "-t", "v311cli/d", "-m", "queued", "--queue", filepath.Join(t.TempDir(), "q")},
	} {
		if st, _, stderr := runTern(t, "", append([]string{"pub", "-L", b.URL}, args...)...); st != 0 {
			t.Fatalf("pub %d: status %d: %s", i, st, stderr)
		}
	}
	if st := s.wait(t, 20*time.Second); st != 0 {
		t.Fatalf("sub: status %d: %s", st, s.stderr.String())
	}
	want := "v311cli/a zero\nv311cli/b one\nv311cli/c two\nv311cli/d queued\n"
	if got := s.stdout.String(); got != want {
		t.Errorf("sub printed %q, want %q", got, want)
	}
	requireP2(t, b, "v311-cli-sub", "v311-cli-q0", "v311-cli-q1", "v311-cli-q2", "v311-cli-queue")
}

// A flag only MQTT 5 can carry, given with -V 311, is a usage error naming it; so is a
// protocol the client does not speak.
func TestV311FlagsUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"pub", "-V", "311", "-t", "a", "-m", "x", "--content-type", "text/plain"}, "--content-type is MQTT 5 only"},
		{[]string{"pub", "-V", "311", "-t", "a", "-m", "x", "--user-property", "k=v"}, "--user-property is MQTT 5 only"},
		{[]string{"pub", "-V", "mqttv311", "-t", "a", "-m", "x", "--expiry", "5"}, "--expiry is MQTT 5 only"},
		{[]string{"pub", "-V", "311", "-t", "a", "-m", "x", "--topic-alias"}, "--topic-alias is MQTT 5 only"},
		{[]string{"pub", "-V", "311", "-t", "a", "-m", "x", "--response-topic", "r"}, "--response-topic is MQTT 5 only"},
		{[]string{"sub", "-V", "311", "-t", "a", "--no-local"}, "--no-local is MQTT 5 only"},
		{[]string{"sub", "-V", "311", "-t", "a", "--retain-handling", "2"}, "--retain-handling is MQTT 5 only"},
		{[]string{"sub", "-V", "311", "-t", "a", "--retain-as-published"}, "--retain-as-published is MQTT 5 only"},
		{[]string{"sub", "-V", "311", "-t", "a", "--max-packet-size", "1000"}, "--max-packet-size is MQTT 5 only"},
		{[]string{"pub", "-V", "mqttv31", "-t", "a", "-m", "x"}, "MQTT 3.1 (protocol level 3) is not supported"},
		{[]string{"sub", "-V", "6", "-t", "a"}, `-V "6": want 5`},
	} {
		st, stdout, stderr := runTern(t, "", tc.args...)
		if st != 2 || !strings.Contains(stderr, tc.msg) || strings.Count(stderr, "\n") != 1 || stdout != "" {
			t.Errorf("tern %q: status %d, stderr %q; want 2 and one line with %q", tc.args, st, stderr, tc.msg)
		}
	}
}

// Scenario clients with protocol 3.1.1 and venom steps with protocolVersion 4 run on 3.1.1.
func TestV311RunMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	out, errs, st := runScenarios(t, "--broker", b.URL, scenarios+"v311", "--var", "addrs="+b.URL)
	if st != 0 || !strings.Contains(out, "2 scenarios: 2 passed, 0 failed") {
		t.Fatalf("status %d\n%s%s", st, out, errs)
	}
	requireP2(t, b, "v311-run-pub", "v311-run-sub", "v311-venom-worker", "v311-venom-pub")
}
