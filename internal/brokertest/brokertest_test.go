package brokertest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// ioTimeout bounds every read and write in these tests; nothing here should take long.
const ioTimeout = 10 * time.Second

// rawConnect is a minimal MQTT 5 CONNECT written out by hand, independent of the codec:
// Clean Start, keepalive 60 s, no properties, client ID "bt".
var rawConnect = []byte{
	0x10, 15, // CONNECT, remaining length
	0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
	0x05,       // protocol level 5
	0x02,       // flags: Clean Start
	0x00, 0x3C, // keepalive
	0x00,                 // property length
	0x00, 0x02, 'b', 't', // client identifier
}

func TestRawHandshake(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		inflight int
		want     uint16
	}{{0, 20}, {7, 7}, {1, 1}} {
		t.Run(fmt.Sprint(tc.inflight), func(t *testing.T) {
			t.Parallel()
			m := StartMosquitto(t, Config{MaxInflight: tc.inflight})
			if !strings.HasPrefix(m.Addr, "127.0.0.1:") || m.URL != "mqtt://"+m.Addr || m.Port == 0 {
				t.Fatalf("Addr %q URL %q Port %d", m.Addr, m.URL, m.Port)
			}
			c, err := net.DialTimeout("tcp", m.Addr, ioTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := c.Write(rawConnect); err != nil {
				t.Fatal(err)
			}
			hdr := make([]byte, 2)
			if _, err := io.ReadFull(c, hdr); err != nil {
				t.Fatalf("read CONNACK: %v\n%s", err, m.Log())
			}
			if hdr[0] != 0x20 || hdr[1] >= 0x80 {
				t.Fatalf("fixed header % x, want 20 and a one-byte length", hdr)
			}
			body := make([]byte, hdr[1])
			if _, err := io.ReadFull(c, body); err != nil {
				t.Fatal(err)
			}
			if body[0] != 0 || body[1] != 0 {
				t.Fatalf("CONNACK flags %#x reason %#x, want 0 0", body[0], body[1])
			}
			got, ok, err := rawReceiveMax(body[2:])
			if err != nil {
				t.Fatalf("CONNACK properties % x: %v", body[2:], err)
			}
			if !ok {
				got = 65535
			}
			if got != tc.want {
				t.Errorf("Receive Maximum %d, want %d", got, tc.want)
			}
		})
	}
}

// rawReceiveMax walks a CONNACK property block (length byte first; short enough here to fit
// one byte) and returns Receive Maximum (0x21) if present.
func rawReceiveMax(b []byte) (v uint16, ok bool, err error) {
	if len(b) == 0 || b[0] >= 0x80 || int(b[0]) != len(b)-1 {
		return 0, false, errors.New("bad property length")
	}
	b = b[1:]
	for len(b) > 0 {
		id := b[0]
		b = b[1:]
		var n int
		switch id {
		case 0x24, 0x25, 0x28, 0x29, 0x2A: // byte
			n = 1
		case 0x13, 0x21, 0x22: // two-byte integer
			n = 2
		case 0x11, 0x27: // four-byte integer
			n = 4
		case 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F: // string or binary
			if len(b) < 2 {
				return 0, false, io.ErrUnexpectedEOF
			}
			n = 2 + int(binary.BigEndian.Uint16(b))
		default:
			return 0, false, fmt.Errorf("unexpected property %#x", id)
		}
		if len(b) < n {
			return 0, false, io.ErrUnexpectedEOF
		}
		if id == 0x21 {
			v, ok = binary.BigEndian.Uint16(b), true
		}
		b = b[n:]
	}
	return v, ok, nil
}

func TestRestartKeepsSessionAndQueue(t *testing.T) {
	t.Parallel()
	m := StartMosquitto(t, Config{Persistence: true})

	// The session must first be created with Clean Start 0: Mosquitto 2.0.11 forgets, at
	// restart, a session created with Clean Start 1 (see BROKERS.md).
	connect := &packet.Connect{ClientID: "keeper", SessionExpiry: 3600}
	sub, ack := dialMQTT(t, m.Addr, connect)
	if ack.SessionPresent {
		t.Fatal("fresh broker: Session Present set")
	}
	sub.subscribe("keep/#", 1)
	sub.disconnect()

	pub, _ := dialMQTT(t, m.Addr, &packet.Connect{ClientID: "pub", CleanStart: true})
	pub.publish("keep/a", "queued before restart", 1)
	pub.Close()

	m.Restart(t)

	sub, ack = dialMQTT(t, m.Addr, connect)
	if !ack.SessionPresent {
		t.Fatalf("Session Present 0 after restart\n%s", m.Log())
	}
	p := sub.nextPublish()
	if p.Topic != "keep/a" || string(p.Payload) != "queued before restart" {
		t.Fatalf("after restart got %q %q", p.Topic, p.Payload)
	}
	sub.ack(p)
}

// TestQueueLimit checks that max_queued_messages 0 really means "never drop" for an offline
// session, and that the check would notice drops: the same run with a limit loses messages.
func TestQueueLimit(t *testing.T) {
	t.Parallel()
	const sent = 1500 // more than Mosquitto's default limit of 1000
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"unlimited", nil},
		{"limit100", []string{"max_queued_messages 100"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := StartMosquitto(t, Config{Extra: tc.extra})
			got := offlineDelivery(t, m, sent)
			t.Logf("%d of %d queued messages delivered", got, sent)
			if tc.extra == nil && got != sent {
				t.Errorf("delivered %d of %d with no queue limit\n%s", got, sent, m.Log())
			}
			if tc.extra != nil && got >= sent {
				t.Errorf("delivered all %d despite max_queued_messages 100", got)
			}
		})
	}
}

// offlineDelivery queues n QoS 1 messages for an offline session, reconnects it and counts
// what arrives. A marker published once the queue is draining ends the count: it is queued
// behind everything Mosquitto kept, so no idle timeout is needed.
func offlineDelivery(t *testing.T, m *Mosquitto, n int) int {
	connect := &packet.Connect{ClientID: "offline", SessionExpiry: 600}
	sub, _ := dialMQTT(t, m.Addr, connect)
	sub.subscribe("q/#", 1)
	sub.disconnect()

	pub, _ := dialMQTT(t, m.Addr, &packet.Connect{ClientID: "pub", CleanStart: true})
	for i := range n {
		pub.publish("q/data", fmt.Sprint(i), 1)
	}

	sub, _ = dialMQTT(t, m.Addr, connect)
	got, last := 0, -1
	for {
		p := sub.nextPublish()
		if p.Topic == "q/end" {
			sub.ack(p)
			return got
		}
		// Drops are expected when the queue is limited, reordering never.
		i, err := strconv.Atoi(string(p.Payload))
		if err != nil || i <= last {
			t.Fatalf("message %q after %d: out of order", p.Payload, last)
		}
		last = i
		got++
		sub.ack(p)
		// After 30 acks the queue has room for the marker even when it was full.
		if got == 30 {
			pub.publish("q/end", "", 1)
		}
	}
}

func TestStopIsIdempotentAndReaps(t *testing.T) {
	t.Parallel()
	m := StartMosquitto(t, Config{})
	pid := m.Pid()
	if pid == 0 {
		t.Fatal("no pid while running")
	}
	m.Stop()
	m.Stop()
	if m.Pid() != 0 {
		t.Fatal("pid still set after Stop")
	}
	assertGone(t, pid)
	if c, err := net.DialTimeout("tcp", m.Addr, ioTimeout); err == nil {
		c.Close()
		t.Fatal("still accepting after Stop")
	}
	if !strings.Contains(m.Log(), "terminating") {
		t.Errorf("log lacks the broker's shutdown line:\n%s", m.Log())
	}
	m.Kill() // no-op once stopped
}

func TestKillThenRestart(t *testing.T) {
	t.Parallel()
	m := StartMosquitto(t, Config{Persistence: true})
	pid := m.Pid()
	m.Kill()
	assertGone(t, pid)
	m.Restart(t)
	if m.Pid() == 0 || m.Pid() == pid {
		t.Fatalf("pid after restart %d (was %d)", m.Pid(), pid)
	}
	c, _ := dialMQTT(t, m.Addr, &packet.Connect{ClientID: "after-kill", CleanStart: true})
	c.Close()
}

// TestReuseDir starts a second broker on the first one's directory, as a test that wants a
// fresh process (and port) on old persistence would.
func TestReuseDir(t *testing.T) {
	t.Parallel()
	m1 := StartMosquitto(t, Config{Persistence: true})
	connect := &packet.Connect{ClientID: "reuse", SessionExpiry: 3600}
	c, _ := dialMQTT(t, m1.Addr, connect)
	c.subscribe("r", 1)
	c.disconnect()
	m1.Stop()

	m2 := StartMosquitto(t, Config{Persistence: true, Dir: m1.Dir})
	_, ack := dialMQTT(t, m2.Addr, connect)
	if !ack.SessionPresent {
		t.Fatalf("session lost across brokers sharing a dir\n%s", m2.Log())
	}
}

// TestExtraOverrides checks that an extra line replaces the default for the same option
// rather than being appended after it.
func TestExtraOverrides(t *testing.T) {
	t.Parallel()
	text := configText(Config{MaxInflight: 5, Extra: []string{"max_inflight_messages 9", "log_type all", "max_qos 1", "listener 1235 127.0.0.1"}}, 1234, "/d")
	for _, want := range []string{"listener 1234 127.0.0.1\n", "max_inflight_messages 9\n", "log_type all\n", "max_qos 1\n",
		"max_queued_messages 0\n", "log_type information\n", "listener 1235 127.0.0.1\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	for _, bad := range []string{"max_inflight_messages 5", "persistence_location"} {
		if strings.Contains(text, bad) {
			t.Errorf("config still has %q:\n%s", bad, text)
		}
	}
}

// TestBusyPort checks that a broker that cannot bind is reported at once, not after the
// ready timeout, and is recognised as a port clash.
func TestBusyPort(t *testing.T) {
	t.Parallel()
	bin := Require(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	m := &Mosquitto{Dir: dir, bin: bin, conf: dir + "/mosquitto.conf"}
	start := time.Now()
	err = m.launch(port)
	if !errors.Is(err, errAddrInUse) {
		t.Fatalf("launch on a busy port: %v, want errAddrInUse\n%s", err, m.Log())
	}
	if d := time.Since(start); d > readyTimeout/2 {
		t.Errorf("took %v to notice", d)
	}
	if m.Pid() != 0 {
		t.Error("failed launch left a process")
	}
}

func assertGone(t *testing.T, pid int) {
	t.Helper()
	// The broker was reaped by Wait, so the PID no longer names any process of ours.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("pid %d still exists after stop: kill(0) = %v", pid, err)
	}
}

// mqttConn is a bare MQTT 5 client for these tests, built on the codec.
type mqttConn struct {
	net.Conn
	t      testing.TB
	r      *packet.Reader
	nextID uint16
}

func dialMQTT(t testing.TB, addr string, connect *packet.Connect) (*mqttConn, *packet.Connack) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &mqttConn{Conn: nc, t: t, r: packet.NewReader(nc, 4096)}
	c.send(connect)
	ack, ok := c.read().(*packet.Connack)
	if !ok || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v", ack)
	}
	return c, ack
}

func (c *mqttConn) send(p interface{ AppendTo([]byte) []byte }) {
	c.t.Helper()
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(p.AppendTo(nil)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet. A Publish is cloned so it outlives the frame.
func (c *mqttConn) read() packet.Packet {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	f, err := c.r.ReadFrame()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	defer f.Release()
	p, err := packet.Decode(&f)
	if err != nil {
		c.t.Fatalf("decode %v: %v", f.Type(), err)
	}
	if pub, ok := p.(*packet.Publish); ok {
		return pub.Clone()
	}
	return p
}

func (c *mqttConn) id() uint16 {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

func (c *mqttConn) subscribe(filter string, qos byte) {
	c.t.Helper()
	c.send(&packet.Subscribe{PacketID: c.id(), Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}})
	ack, ok := c.read().(*packet.Suback)
	if !ok || len(ack.ReasonCodes) != 1 || byte(ack.ReasonCodes[0]) != qos {
		c.t.Fatalf("SUBACK %+v", ack)
	}
}

// publish sends one message and, for QoS 1, waits for its PUBACK.
func (c *mqttConn) publish(topic, payload string, qos byte) {
	c.t.Helper()
	p := &packet.Publish{Topic: topic, Payload: []byte(payload), QoS: qos}
	if qos > 0 {
		p.PacketID = c.id()
	}
	c.send(p)
	if qos == 0 {
		return
	}
	ack, ok := c.read().(*packet.Ack)
	if !ok || ack.Kind != packet.PUBACK || ack.PacketID != p.PacketID || ack.ReasonCode.IsError() {
		c.t.Fatalf("PUBACK %+v for %d", ack, p.PacketID)
	}
}

func (c *mqttConn) nextPublish() *packet.Publish {
	c.t.Helper()
	for {
		switch p := c.read().(type) {
		case *packet.Publish:
			return p
		case *packet.Pingresp:
		default:
			c.t.Fatalf("unexpected %T %+v", p, p)
		}
	}
}

func (c *mqttConn) ack(p *packet.Publish) {
	c.t.Helper()
	if p.QoS == 1 {
		c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
}

// disconnect ends the connection cleanly, keeping the session.
func (c *mqttConn) disconnect() {
	c.t.Helper()
	c.send(&packet.Disconnect{})
	// Wait for the broker to close its side, so the session is offline before we go on.
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	if n, err := io.Copy(io.Discard, c.Conn); err != nil || n != 0 {
		c.t.Fatalf("after DISCONNECT: %d bytes, %v", n, err)
	}
	c.Close()
}
