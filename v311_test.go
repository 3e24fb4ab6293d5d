package tern

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

// MQTT 3.1.1 against a real Mosquitto. Mosquitto logs each client's protocol ("p2" is 3.1.1),
// which the tests check so that a silent MQTT 5 connection cannot pass for 3.1.1.

func v311Opts(id string) []Option {
	return []Option{WithProtocol(MQTT311), WithClientID(id)}
}

func requireP2(t *testing.T, b *brokertest.Mosquitto, id string) {
	t.Helper()
	if !strings.Contains(b.Log(), " as "+id+" (p2,") {
		t.Errorf("Mosquitto did not log %s as a 3.1.1 (p2) client:\n%s", id, tail(b.Log(), 2000))
	}
}

// Round trips at QoS 0, 1 and 2 and a retained message, byte-exact.
func TestV311RoundTripMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	sub := newTestClient(t, b.URL, v311Opts("v311-rt-sub")...)
	pub := newTestClient(t, b.URL, v311Opts("v311-rt-pub")...)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "v311/rt/#", QoS: 2}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	for qos := byte(0); qos <= 2; qos++ {
		payload := []byte{0, 1, 2, 0xFF, byte(qos), '\n'}
		if err := pub.Publish(ctx, PublishOptions{Topic: fmt.Sprintf("v311/rt/%d", qos), QoS: qos, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		m := recv(t, ch)
		if m.QoS != qos || !bytes.Equal(m.Payload, payload) || m.Topic != fmt.Sprintf("v311/rt/%d", qos) {
			t.Fatalf("got %s QoS %d % X, want QoS %d % X", m.Topic, m.QoS, m.Payload, qos, payload)
		}
	}
	if err := pub.Publish(ctx, PublishOptions{Topic: "v311/retained", QoS: 1, Retain: true, Payload: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	late := newTestClient(t, b.URL, v311Opts("v311-rt-late")...)
	rch, _, err := late.Subscribe(ctx, []TopicFilter{{Topic: "v311/retained", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if m := recv(t, rch); !m.Retain || string(m.Payload) != "kept" {
		t.Fatalf("retained: %+v", m)
	}
	for _, c := range []*Client{sub, pub, late} {
		if v := c.Info().Version; v != packet.Version311 {
			t.Errorf("Info().Version = %d, want 4", v)
		}
	}
	requireP2(t, b, "v311-rt-sub")
	requireP2(t, b, "v311-rt-pub")
}

// The will of a 3.1.1 client whose connection is cut is published by the broker.
func TestV311WillMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	proxy := faultproxy.New(t, b.Addr)
	ctx := testCtx(t)
	sub := newTestClient(t, b.URL, v311Opts("v311-will-sub")...)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "v311/will", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	newTestClient(t, proxy.URL(), append(v311Opts("v311-will"),
		WithWill(&packet.Will{Topic: "v311/will", Payload: []byte("gone"), QoS: 1}))...)
	requireP2(t, b, "v311-will")
	proxy.Refuse(true)
	proxy.Cut()
	if m := recv(t, ch); string(m.Payload) != "gone" {
		t.Fatalf("will payload %q", m.Payload)
	}
}

// A persistent 3.1.1 session (session expiry above 0 → Clean Session 0) resumes after a cut:
// the messages queued meanwhile arrive, none lost.
func TestV311SessionResumeAfterCutMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	proxy := faultproxy.New(t, b.Addr)
	ctx := testCtx(t)
	life := newLifecycle()
	sub := newTestClient(t, proxy.URL(), append(append(v311Opts("v311-resume-sub"),
		WithSessionExpiry(time.Hour), fastReconnect()), life.options()...)...)
	life.waitUp(t, 10*time.Second, "first connect")
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "v311/resume", QoS: 2}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	proxy.Refuse(true)
	proxy.Cut()
	life.waitDown(t, 10*time.Second, "cut")
	pub := newTestClient(t, b.URL, v311Opts("v311-resume-pub")...)
	const n = 100
	for i := 0; i < n; i++ {
		if err := pub.Publish(ctx, PublishOptions{Topic: "v311/resume", QoS: byte(1 + i%2), Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Refuse(false)
	if info := life.waitUp(t, 20*time.Second, "resume"); !info.SessionPresent {
		t.Fatal("session not present after the cut")
	}
	for i := 0; i < n; i++ {
		if m := recv(t, ch); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, m.Payload)
		}
	}
}

// A persistent 3.1.1 session and its queued messages survive a broker restart with
// persistence (the session is created with Clean Session 0, which Mosquitto 2.0.11 keeps;
// see BROKERS.md).
func TestV311BrokerRestartMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{Persistence: true})
	brokerLogOnFailure(t, b)
	proxy := faultproxy.New(t, b.Addr)
	ctx := faultCtx(t, time.Minute)
	life := newLifecycle()
	sub := newTestClient(t, proxy.URL(), append(append(v311Opts("v311-restart-sub"),
		WithSessionExpiry(time.Hour), fastReconnect()), life.options()...)...)
	life.waitUp(t, 10*time.Second, "first connect")
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "v311/restart", QoS: 2}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	proxy.Refuse(true)
	proxy.Cut()
	life.waitDown(t, 10*time.Second, "cut")
	pub := newTestClient(t, b.URL, append(v311Opts("v311-restart-pub"), WithSessionExpiry(time.Hour), fastReconnect())...)
	const n = 100
	for i := 0; i < n; i++ {
		if err := pub.Publish(ctx, PublishOptions{Topic: "v311/restart", QoS: byte(1 + i%2), Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	b.Restart(t)
	proxy.Refuse(false)
	if info := life.waitUp(t, 30*time.Second, "after restart"); !info.SessionPresent {
		t.Fatal("session lost at the broker restart")
	}
	seen := make(map[string]bool)
	for len(seen) < n {
		seen[string(recv(t, ch).Payload)] = true
	}
	for i := 0; i < n; i++ {
		if !seen[fmt.Sprint(i)] {
			t.Errorf("message %d lost", i)
		}
	}
}

// Interop with mosquitto_pub/sub -V mqttv311, byte-exact both ways.
func TestV311MosquittoClientsInterop(t *testing.T) {
	for _, tool := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	host, port := strings.Split(b.Addr, ":")[0], strings.Split(b.Addr, ":")[1]
	payload := []byte{0x00, 0x7F, 0x80, 0xFF, 'a', '\r', '\n', 0x00}

	// Tern → mosquitto_sub: a retained message, so the tool needs no timing.
	c := newTestClient(t, b.URL, v311Opts("v311-interop")...)
	if err := c.Publish(ctx, PublishOptions{Topic: "v311/interop/a", QoS: 1, Retain: true, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "mosquitto_sub", "-V", "mqttv311", "-h", host, "-p", port,
		"-t", "v311/interop/a", "-C", "1", "-N", "-q", "1").Output()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	if !bytes.Equal(out, payload) {
		t.Errorf("mosquitto_sub got % X, want % X", out, payload)
	}

	// mosquitto_pub → Tern.
	ch, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "v311/interop/b", QoS: 2}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(file, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "mosquitto_pub", "-V", "mqttv311", "-h", host, "-p", port,
		"-t", "v311/interop/b", "-q", "2", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	if m := recv(t, ch); !bytes.Equal(m.Payload, payload) || m.QoS != 2 {
		t.Errorf("got QoS %d % X, want QoS 2 % X", m.QoS, m.Payload, payload)
	}
}

// The fault suite's cut cases on 3.1.1: nothing acknowledged is lost, QoS 2 is not
// duplicated.
func TestFaultCutsQoS1V311(t *testing.T) { testFaultCuts(t, 1, WithProtocol(MQTT311)) }

func TestFaultCutsQoS2V311(t *testing.T) { testFaultCuts(t, 2, WithProtocol(MQTT311)) }

// The fault suite decodes what its proxy recorded at the level the connection's CONNECT
// names: a 3.1.1 PUBLISH read as MQTT 5 would take its payload's first byte for a property
// length, and the QoS 2 replay check would see no message at all.
func TestDecodeRecordingV311(t *testing.T) {
	t0 := time.Now()
	seg := func(dir int, p interface{ AppendTo([]byte) []byte }, i int) faultproxy.Segment {
		return faultproxy.Segment{Conn: 1, Dir: dir, At: t0.Add(time.Duration(i) * time.Millisecond), Data: p.AppendTo(nil)}
	}
	v := packet.Version311
	pkts := decodeRecording([]faultproxy.Segment{
		seg(faultproxy.Up, &packet.Connect{Version: v, ClientID: "c", KeepAlive: 30}, 0),
		seg(faultproxy.Down, &packet.Connack{Version: v}, 1),
		seg(faultproxy.Down, &packet.Publish{Version: v, Topic: "t", QoS: 2, PacketID: 7, Payload: []byte("123")}, 2),
		seg(faultproxy.Up, &packet.Ack{Version: v, Kind: packet.PUBREC, PacketID: 7}, 3),
		seg(faultproxy.Down, &packet.Ack{Version: v, Kind: packet.PUBREL, PacketID: 7}, 4),
		seg(faultproxy.Down, &packet.Publish{Version: v, Topic: "t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("123")}, 5),
	})
	if len(pkts) != 6 {
		t.Fatalf("%d packets decoded, want 6: %v", len(pkts), pkts)
	}
	if p := pkts[2]; p.Kind != packet.PUBLISH || p.ID != 7 || p.QoS != 2 || p.Payload != "123" {
		t.Errorf("PUBLISH decoded as %v", p)
	}
	// The resend after PUBREL counts as a replay once the client handled the PUBREL.
	replayed, _ := qos2Replays(pkts, []receiptRelease{{id: 7, at: t0.Add(4500 * time.Microsecond)}})
	if replayed["123"] != 1 {
		t.Errorf("replays %v, want 123 once", replayed)
	}
}

// The fault suite's broker-restart case on 3.1.1: nothing acknowledged is lost across two
// restarts, and no QoS 2 message is delivered twice while the client holds its receipt.
func TestFaultBrokerRestartV311(t *testing.T) {
	testFaultBrokerRestart(t, packet.Version311, WithProtocol(MQTT311))
}

// Against Mosquitto at 3.1.1: a message above the subscriber's limit, queued for its
// persistent session while it was away, is skipped and acknowledged, the messages around it
// arrive, and the next connection of the session does not get it again.
func TestV311OversizedQueuedMessageMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx := testCtx(t)
	opts := append(v311Opts("v311-big-sub"), WithSessionExpiry(time.Hour), WithMaximumPacketSize(1000))
	sub := newTestClient(t, b.URL, opts...)
	if _, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "v311/big/#", QoS: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	pub := newTestClient(t, b.URL, v311Opts("v311-big-pub")...)
	for i, size := range []int{10, 5000, 10} {
		if err := pub.Publish(ctx, PublishOptions{Topic: fmt.Sprintf("v311/big/%d", i), QoS: 1,
			Payload: bytes.Repeat([]byte{'x'}, size)}); err != nil {
			t.Fatal(err)
		}
	}
	resume := func() (*Client, <-chan *Message) {
		c, err := New(append([]Option{WithBroker(b.URL), WithStats()}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		ch, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "v311/big/#", QoS: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		return c, ch
	}
	again, ch := resume()
	for _, want := range []string{"v311/big/0", "v311/big/2"} {
		m := recv(t, ch)
		if m.Topic != want {
			t.Fatalf("got %s, want %s", m.Topic, want)
		}
		m.Ack()
	}
	waitFor(t, func() bool { return again.Stats().Oversized == 1 && again.Stats().AcksSent == 2 })
	if again.Stats().ConnectionLost != 0 {
		t.Fatal("the connection was lost over the oversized message")
	}
	if err := again.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	// The next connection of the session follows at once: Disconnect has returned only once
	// the broker read everything before the DISCONNECT, so the acknowledgements are in.
	// The session again: nothing is left for it, the oversized message included.
	third, ch := resume()
	defer third.Disconnect(ctx)
	if err := pub.Publish(ctx, PublishOptions{Topic: "v311/big/end", QoS: 1, Payload: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch); m.Topic != "v311/big/end" {
		t.Fatalf("the session resumed with %s again", m.Topic)
	}
	if n := third.Stats().Oversized; n != 0 {
		t.Fatalf("the oversized message came again (%d)", n)
	}
}
