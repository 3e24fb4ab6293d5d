package main

import "testing"

// kill -9 of pub --queue -c -i ID at QoS 2 while it drains into a broker that keeps the
// session: the broker holds the QoS 2 exchanges the killed process had started (PUBREC sent,
// no PUBREL yet), so the next process must know them to finish them. Without the session's
// in-flight state on disk it cannot: the stale exchanges fill the broker's Receive Maximum
// and every later publish is refused with 0x97 forever (or a new message reuses a stale
// packet id and the broker takes it for a resend). Promises: kill -9 at any moment loses
// nothing that was reported accepted; [MQTT-4.3.3-10] a PUBLISH reusing the id of an
// unreleased exchange is not delivered again.
func TestPubQueueKill9PersistentQoS2(t *testing.T) {
	// A small window, so every kill mid-drain leaves the whole window unreleased.
	url := startMosquitto(t, "max_inflight_messages 4")
	rx := startReceiver(t, url, "spool/p")
	dir := t.TempDir()
	args := []string{"pub", "--queue", dir, "-L", url, "-t", "spool/p", "-q", "2", "-c", "-i", "spool-p"}
	accepted := map[string]bool{}
	const lines = 400
	for round, killAt := range []int{100, 200, 300, 150} {
		spoolAndKill(t, append(args, "-l", "--print-stored", "--drain-timeout", "30s"), round, lines, killAt, accepted)
	}
	drainAndCheck(t, rx, accepted, append(args, "--drain-timeout", "20s")...)
}
