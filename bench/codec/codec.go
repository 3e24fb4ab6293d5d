// Package codec holds the side-by-side PUBLISH codec benchmarks: tern's packet package against
// paho.golang's packets package, on the same packets, through the same sink. The benchmark
// bodies live here rather than in a _test file so that codec_test.go (go test -bench) and
// cmd/codecratio (testing.Benchmark) run the very same code.
//
// Method. Decode starts for both libraries from the complete encoded packet in memory and
// pays for framing: paho through packets.ReadPacket on a bytes.Reader, tern through a
// packet.Reader (ReadFrame, Publish.Decode into a reused Publish, Frame.Release) on a
// bytes.Reader. Encode builds the packet value once; paho calls WriteTo(Sink), tern appends
// into a reused buffer with AppendTo and writes that to Sink.
package codec

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/ternmq/tern/packet"
)

// Sink is where both encoders write. io.Discard keeps the measurement on the codec.
var Sink io.Writer = io.Discard

// Topic and PacketID are the fixed fields of every benchmark packet; they match
// packet/bench_test.go in the main module.
const (
	Topic    = "sensors/building-1/floor-2/temperature"
	PacketID = 42
	QoS      = 1
)

// Case is one benchmark input: a QoS 1 PUBLISH with a payload of Size bytes, with or without
// properties (content type plus five user properties).
type Case struct {
	Size  int
	Props bool
}

// Cases returns the inputs in table order.
func Cases() []Case {
	return []Case{{64, false}, {64, true}, {1024, false}, {1024, true}}
}

// SizeName is the payload size as a benchmark name element: "64B" or "1KiB".
func (c Case) SizeName() string {
	if c.Size%1024 == 0 {
		return fmt.Sprintf("%dKiB", c.Size/1024)
	}
	return fmt.Sprintf("%dB", c.Size)
}

// PropsName is "props" or "noprops".
func (c Case) PropsName() string {
	if c.Props {
		return "props"
	}
	return "noprops"
}

// Name is SizeName/PropsName.
func (c Case) Name() string { return c.SizeName() + "/" + c.PropsName() }

// Payload returns the case's payload: bytes counting up from 0, as in packet/bench_test.go.
func (c Case) Payload() []byte {
	p := make([]byte, c.Size)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

// ContentType and UserProperties are the properties of the "props" cases.
const ContentType = "application/json"

// UserProperties returns the five user properties k1=v1 ... k5=v5.
func UserProperties() [][2]string {
	return [][2]string{{"k1", "v1"}, {"k2", "v2"}, {"k3", "v3"}, {"k4", "v4"}, {"k5", "v5"}}
}

// Tern returns the case as a tern packet.Publish.
func (c Case) Tern() *packet.Publish {
	p := &packet.Publish{Topic: Topic, Payload: c.Payload(), QoS: QoS, PacketID: PacketID}
	if c.Props {
		p.ContentType = ContentType
		for _, kv := range UserProperties() {
			p.UserProperties = append(p.UserProperties, packet.UserProperty{Key: kv[0], Value: kv[1]})
		}
	}
	return p
}

// Paho returns the case as a paho packets.Publish.
func (c Case) Paho() *packets.Publish {
	p := &packets.Publish{
		Topic: Topic, Payload: c.Payload(), QoS: QoS, PacketID: PacketID,
		Properties: &packets.Properties{},
	}
	if c.Props {
		p.Properties.ContentType = ContentType
		for _, kv := range UserProperties() {
			p.Properties.User = append(p.Properties.User, packets.User{Key: kv[0], Value: kv[1]})
		}
	}
	return p
}

// Wire returns the case's complete encoded packet, the input of both decode benchmarks. The
// tests check that both libraries encode the case to exactly these bytes.
func (c Case) Wire() []byte { return c.Tern().AppendTo(nil) }

// TernEncode measures packet.Publish.AppendTo into a reused buffer plus one write to Sink.
func TernEncode(c Case) func(*testing.B) {
	return func(b *testing.B) {
		p := c.Tern()
		buf := make([]byte, 0, p.Len())
		w := Sink
		b.ReportAllocs()
		b.SetBytes(int64(p.Len()))
		for b.Loop() {
			buf = p.AppendTo(buf[:0])
			if _, err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// PahoEncode measures packets.Publish.WriteTo(Sink) on a packet built once.
func PahoEncode(c Case) func(*testing.B) {
	return func(b *testing.B) {
		p := c.Paho()
		w := Sink
		b.ReportAllocs()
		b.SetBytes(int64(len(c.Wire())))
		for b.Loop() {
			if _, err := p.WriteTo(w); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TernDecode measures framing and decoding with packet.Reader: ReadFrame, Publish.Decode into
// a reused Publish, Frame.Release. The bytes.Reader under it is rewound every iteration.
func TernDecode(c Case) func(*testing.B) {
	return func(b *testing.B) {
		wire := c.Wire()
		src := bytes.NewReader(wire)
		r := packet.NewReader(src, 4096)
		var p packet.Publish
		step := func() {
			src.Reset(wire)
			f, err := r.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			if f.Type() != packet.PUBLISH {
				b.Fatalf("read a %v", f.Type())
			}
			if err := p.Decode(f.Flags(), f.Body); err != nil {
				b.Fatal(err)
			}
			if p.Topic != Topic || len(p.Payload) != c.Size {
				b.Fatalf("decoded %q with %d bytes", p.Topic, len(p.Payload))
			}
			f.Release()
		}
		step() // once untimed, so a broken setup fails before it is measured
		b.ReportAllocs()
		b.SetBytes(int64(len(wire)))
		for b.Loop() {
			src.Reset(wire)
			f, err := r.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			if f.Type() != packet.PUBLISH {
				b.Fatalf("read a %v", f.Type())
			}
			if err := p.Decode(f.Flags(), f.Body); err != nil {
				b.Fatal(err)
			}
			f.Release()
		}
	}
}

// PahoDecode measures packets.ReadPacket on a bytes.Reader rewound every iteration.
func PahoDecode(c Case) func(*testing.B) {
	return func(b *testing.B) {
		wire := c.Wire()
		src := bytes.NewReader(wire)
		if cp, err := packets.ReadPacket(src); err != nil {
			b.Fatal(err)
		} else if p, ok := cp.Content.(*packets.Publish); !ok || p.Topic != Topic || len(p.Payload) != c.Size {
			b.Fatalf("decoded %v", cp.Content)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(wire)))
		for b.Loop() {
			src.Reset(wire)
			cp, err := packets.ReadPacket(src)
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := cp.Content.(*packets.Publish); !ok {
				b.Fatalf("read a %T", cp.Content)
			}
		}
	}
}

// Bench is one leaf of the BenchmarkCodec tree: lib=Lib/Op/Case.Name().
type Bench struct {
	Lib  string // "tern" or "paho"
	Op   string // "encode" or "decode"
	Case Case
	F    func(*testing.B)
}

// Libs and Ops list the tree's first two levels in order.
var (
	Libs = []string{"tern", "paho"}
	Ops  = []string{"encode", "decode"}
)

// Benchmarks returns every leaf, ordered lib, op, case.
func Benchmarks() []Bench {
	fns := map[string]func(Case) func(*testing.B){
		"tern/encode": TernEncode, "tern/decode": TernDecode,
		"paho/encode": PahoEncode, "paho/decode": PahoDecode,
	}
	var out []Bench
	for _, lib := range Libs {
		for _, op := range Ops {
			for _, c := range Cases() {
				out = append(out, Bench{Lib: lib, Op: op, Case: c, F: fns[lib+"/"+op](c)})
			}
		}
	}
	return out
}
