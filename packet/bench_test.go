package packet

import (
	"fmt"
	"testing"
)

// benchPublishes are the PUBLISH packets the codec benchmarks use; bench/codec builds the same
// inputs for the side-by-side comparison with Paho.
func benchPublishes() []struct {
	name string
	p    Publish
} {
	props := []UserProperty{
		{"k1", "v1"}, {"k2", "v2"}, {"k3", "v3"}, {"k4", "v4"}, {"k5", "v5"},
	}
	var out []struct {
		name string
		p    Publish
	}
	for _, size := range []int{64, 1024} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i)
		}
		out = append(out,
			struct {
				name string
				p    Publish
			}{fmt.Sprintf("%dB/noprops", size), Publish{
				Topic: "sensors/building-1/floor-2/temperature", Payload: payload, QoS: 1, PacketID: 42,
			}},
			struct {
				name string
				p    Publish
			}{fmt.Sprintf("%dB/props", size), Publish{
				Topic: "sensors/building-1/floor-2/temperature", Payload: payload, QoS: 1, PacketID: 42,
				ContentType: "application/json", UserProperties: props,
			}})
	}
	return out
}

func BenchmarkEncodePublish(b *testing.B) {
	for _, c := range benchPublishes() {
		b.Run(c.name, func(b *testing.B) {
			p := c.p
			buf := make([]byte, 0, p.Len())
			b.ReportAllocs()
			b.SetBytes(int64(p.Len()))
			for b.Loop() {
				buf = p.AppendTo(buf[:0])
			}
		})
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	for _, c := range benchPublishes() {
		b.Run(c.name, func(b *testing.B) {
			wire := c.p.AppendTo(nil)
			_, n, _ := ReadVBI(wire[1:])
			body := wire[1+n:]
			var p Publish
			b.ReportAllocs()
			b.SetBytes(int64(len(wire)))
			for b.Loop() {
				if err := p.Decode(wire[0]&0x0F, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
