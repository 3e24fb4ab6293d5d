package json_test

import (
	stdjson "encoding/json"
	"errors"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/codec/json"
)

type reading struct {
	Device string            `json:"device"`
	Temp   float64           `json:"temp"`
	Tags   map[string]string `json:"tags,omitempty"`
}

// The codec satisfies tern.Codec, and a type argument is inferred from it.
var _ tern.Codec[reading] = json.Codec[reading]{}

func TestRoundTrip(t *testing.T) {
	c := json.Codec[reading]{}
	in := reading{Device: "a1", Temp: 21.5, Tags: map[string]string{"room": "lab"}}
	b, err := c.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"device":"a1","temp":21.5,"tags":{"room":"lab"}}` {
		t.Fatalf("encoded %s", b)
	}
	out, err := c.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	// Decode keeps nothing of its input (a zero-copy payload is reused after Ack).
	for i := range b {
		b[i] = 'x'
	}
	if out.Device != "a1" || out.Temp != 21.5 || out.Tags["room"] != "lab" {
		t.Fatalf("decoded %+v", out)
	}
	if got := c.ContentType(); got != "application/json" {
		t.Fatalf("content type %q", got)
	}
}

func TestDecodeError(t *testing.T) {
	_, err := json.Codec[reading]{}.Decode([]byte(`{"temp":"warm"}`))
	var typeErr *stdjson.UnmarshalTypeError
	if !errors.As(err, &typeErr) {
		t.Fatalf("got %v, want *json.UnmarshalTypeError", err)
	}
}

var sink reading

func BenchmarkEncode(b *testing.B) {
	c := json.Codec[reading]{}
	v := reading{Device: "sensor-0042", Temp: 21.5}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Encode(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	c := json.Codec[reading]{}
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
