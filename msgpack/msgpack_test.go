package msgpack_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/msgpack"
)

type reading struct {
	Device string  `msgpack:"device"`
	Temp   float64 `msgpack:"temp"`
	Raw    []byte  `msgpack:"raw,omitempty"`
}

var _ tern.Codec[reading] = msgpack.Codec[reading]{}

func TestRoundTrip(t *testing.T) {
	c := msgpack.Codec[reading]{}
	in := reading{Device: "a1", Temp: 21.5, Raw: []byte{1, 2, 3}}
	b, err := c.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	// Decode keeps nothing of its input (a zero-copy payload is reused after Ack).
	for i := range b {
		b[i] = 0xc1 // never used in MessagePack
	}
	if out.Device != "a1" || out.Temp != 21.5 || string(out.Raw) != "\x01\x02\x03" {
		t.Fatalf("decoded %+v", out)
	}
	if c.ContentType() != "application/msgpack" {
		t.Fatalf("content type %q", c.ContentType())
	}
	if _, err := c.Decode([]byte{0xc1}); err == nil {
		t.Fatal("0xc1 decoded without error")
	}
}

// Through a real broker: the value arrives decoded with the codec's Content Type, and a
// payload that is not MessagePack arrives as a decode error without ending the subscription.
func TestTypedThroughMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := tern.New(tern.WithBroker(b.URL))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	typ := tern.NewTyped(c, msgpack.Codec[reading]{})
	q, _, err := typ.SubscribeQueue(ctx, []tern.TopicFilter{{Topic: "mp/#", QoS: 1}}, tern.SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, tern.PublishOptions{Topic: "mp/a", QoS: 1, Payload: []byte{0xc1}}); err != nil {
		t.Fatal(err)
	}
	want := reading{Device: "mp", Temp: -4.25}
	if err := typ.Publish(ctx, tern.PublishOptions{Topic: "mp/a", QoS: 1}, want); err != nil {
		t.Fatal(err)
	}
	bad, ok := q.Pop(ctx)
	if !ok || !errors.Is(bad.Err, tern.ErrDecode) {
		t.Fatalf("first message: ok=%v err=%v, want ErrDecode", ok, bad.Err)
	}
	good, ok := q.Pop(ctx)
	if !ok || good.Err != nil || good.Value.Device != want.Device || good.Value.Temp != want.Temp {
		t.Fatalf("second message: %+v", good)
	}
	if good.ContentType != msgpack.ContentType {
		t.Fatalf("content type %q", good.ContentType)
	}
}

var sink reading

func BenchmarkEncode(b *testing.B) {
	c := msgpack.Codec[reading]{}
	v := reading{Device: "sensor-0042", Temp: 21.5}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Encode(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	c := msgpack.Codec[reading]{}
	data, _ := c.Encode(reading{Device: "sensor-0042", Temp: 21.5})
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		v, err := c.Decode(data)
		if err != nil {
			b.Fatal(err)
		}
		sink = v
	}
}
