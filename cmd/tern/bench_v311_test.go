package main

import (
	"strings"
	"testing"

	"github.com/ternmq/tern/internal/brokertest"
)

// tern bench -V 311 connects every publisher and subscriber at protocol level 4 (Mosquitto
// logs 3.1.1 clients as "p2") and counts each message exactly once, at QoS 0, 1 and 2.
// [promise: the CLI's -V flag reaches every connection a command opens]
func TestBenchV311Mosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	for _, qos := range []string{"0", "1", "2"} {
		t.Run("qos"+qos, func(t *testing.T) {
			t.Setenv("TERN_BROKER", "")
			id := "bench311-q" + qos
			code, out, errOut, rep := runBenchJSON(t, "pubsub", "-L", b.URL, "-V", "311", "-i", id,
				"-c", "2", "--subs", "2", "-n", "200", "-q", qos, "--inflight", "8")
			if code != 0 || rep == nil {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if rep.Sent != 400 || rep.Expected != 800 || rep.Received != 800 || rep.Lost != 0 || rep.Duplicates != 0 {
				t.Fatalf("sent %d expected %d received %d lost %d dup %d\n%s",
					rep.Sent, rep.Expected, rep.Received, rep.Lost, rep.Duplicates, out)
			}
			var p2, p5 int
			for _, ln := range strings.Split(b.Log(), "\n") {
				if !strings.Contains(ln, " as "+id) {
					continue
				}
				switch {
				case strings.Contains(ln, "(p2,"):
					p2++
				case strings.Contains(ln, "(p5,"):
					p5++
				}
			}
			if p2 != 4 || p5 != 0 {
				t.Fatalf("Mosquitto logged %d 3.1.1 and %d MQTT 5 connections of %s*, want 4 and 0:\n%s",
					p2, p5, id, b.Log())
			}
		})
	}
}
