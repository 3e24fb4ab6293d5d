// Package interop checks that Tern on MQTT 3.1.1 and the Eclipse Paho 3.1.1 client
// (paho.mqtt.golang) understand each other through a real Mosquitto. It lives in the bench
// module, which already requires Paho, so the core module stays free of requirements.
package interop

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/brokertest"
)

// TestMain fails the run if a goroutine of Tern or Paho outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		for {
			left := leftGoroutines()
			if left == "" {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n%s\n", left)
				code = 1
				break
			}
			time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
		}
	}
	os.Exit(code)
}

func leftGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if (strings.Contains(g, "ternmq/tern.") || strings.Contains(g, "paho.mqtt.golang")) &&
			!strings.Contains(g, "TestMain") && !strings.Contains(g, "testing.tRunner") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// payloads are byte-exact probes: NUL, high bytes, line ends, invalid UTF-8, an empty one
// and one larger than a small read buffer.
func payloads() [][]byte {
	big := make([]byte, 70000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	return [][]byte{{0x00}, {0xFF, 0xFE, 0x80, 0x00, '\r', '\n'}, {}, []byte("plain text"), big}
}

func newPaho(t *testing.T, addr, id string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(250) })
	return c
}

func newTern(t *testing.T, url, id string) *tern.Client {
	t.Helper()
	c, err := tern.New(tern.WithBroker(url), tern.WithClientID(id), tern.WithProtocol(tern.MQTT311))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	if v := c.Info().Version; v != 4 {
		t.Fatalf("tern on protocol level %d, want 4", v)
	}
	return c
}

type got struct {
	topic   string
	qos     byte
	payload []byte
}

// Tern publishes at QoS 0, 1 and 2 to a Paho subscriber (and Paho to Tern): every payload
// arrives byte for byte, at the QoS it was sent, and Mosquitto saw both as 3.1.1 clients.
// Promise: a Tern 3.1.1 client interoperates with the most used 3.1.1 Go client.
func TestTernPaho3Interop(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tc := newTern(t, b.URL, "interop-tern")
	pc := newPaho(t, b.Addr, "interop-paho")

	// Paho's callbacks run on its router goroutine; copy the payload out.
	fromTern := make(chan got, 64)
	if tok := pc.Subscribe("interop/to-paho/#", 2, func(_ mqtt.Client, m mqtt.Message) {
		fromTern <- got{m.Topic(), m.Qos(), bytes.Clone(m.Payload())}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho subscribe: %v", tok.Error())
	}
	fromPaho, _, err := tc.Subscribe(ctx, []tern.TopicFilter{{Topic: "interop/to-tern/#", QoS: 2}}, tern.SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}

	for qos := byte(0); qos <= 2; qos++ {
		for i, p := range payloads() {
			topic := fmt.Sprintf("interop/to-paho/q%d/%d", qos, i)
			if err := tc.Publish(ctx, tern.PublishOptions{Topic: topic, QoS: qos, Payload: p}); err != nil {
				t.Fatalf("tern publish %s: %v", topic, err)
			}
			select {
			case m := <-fromTern:
				if m.topic != topic || m.qos != qos || !bytes.Equal(m.payload, p) {
					t.Errorf("paho got %s QoS %d (%d bytes), want %s QoS %d (%d bytes), payload equal: %v",
						m.topic, m.qos, len(m.payload), topic, qos, len(p), bytes.Equal(m.payload, p))
				}
			case <-ctx.Done():
				t.Fatalf("paho never got %s", topic)
			}

			topic = fmt.Sprintf("interop/to-tern/q%d/%d", qos, i)
			if tok := pc.Publish(topic, qos, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("paho publish %s: %v", topic, tok.Error())
			}
			select {
			case m := <-fromPaho:
				if m.Topic != topic || m.QoS != qos || !bytes.Equal(m.Payload, p) {
					t.Errorf("tern got %s QoS %d (%d bytes), want %s QoS %d (%d bytes), payload equal: %v",
						m.Topic, m.QoS, len(m.Payload), topic, qos, len(p), bytes.Equal(m.Payload, p))
				}
			case <-ctx.Done():
				t.Fatalf("tern never got %s", topic)
			}
		}
	}
	for _, id := range []string{"interop-tern", "interop-paho"} {
		if !strings.Contains(b.Log(), " as "+id+" (p2,") {
			t.Errorf("Mosquitto did not log %s as a 3.1.1 (p2) client", id)
		}
	}
}
