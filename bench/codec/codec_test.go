package codec

import (
	"bytes"
	"slices"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/ternmq/tern/packet"
)

// BenchmarkCodec runs the tree lib={tern,paho}/{encode,decode}/{64B,1KiB}/{noprops,props}.
// Compare with: go test -run '^$' -bench BenchmarkCodec -benchmem -count 10 ./codec | benchstat
// or print the ratio table with: go run ./cmd/codecratio
func BenchmarkCodec(b *testing.B) {
	all := Benchmarks()
	for _, lib := range Libs {
		b.Run("lib="+lib, func(b *testing.B) {
			for _, op := range Ops {
				b.Run(op, func(b *testing.B) {
					for _, size := range []string{"64B", "1KiB"} {
						b.Run(size, func(b *testing.B) {
							for _, bb := range all {
								if bb.Lib == lib && bb.Op == op && bb.Case.SizeName() == size {
									b.Run(bb.Case.PropsName(), bb.F)
								}
							}
						})
					}
				})
			}
		})
	}
}

// pahoUsers converts paho's user properties to pairs.
func pahoUsers(ups []packets.User) [][2]string {
	var out [][2]string
	for _, u := range ups {
		out = append(out, [2]string{u.Key, u.Value})
	}
	return out
}

func ternUsers(ups []packet.UserProperty) [][2]string {
	var out [][2]string
	for _, u := range ups {
		out = append(out, [2]string{u.Key, u.Value})
	}
	return out
}

// TestSameInputs proves both libraries benchmark the same packet: each encodes the case to
// the same bytes, and each decodes the other's bytes to the case's fields.
func TestSameInputs(t *testing.T) {
	t.Parallel()
	for _, c := range Cases() {
		t.Run(c.Name(), func(t *testing.T) {
			t.Parallel()
			var pahoWire bytes.Buffer
			if _, err := c.Paho().WriteTo(&pahoWire); err != nil {
				t.Fatal(err)
			}
			ternWire := c.Tern().AppendTo(nil)
			if !bytes.Equal(pahoWire.Bytes(), ternWire) {
				t.Fatalf("encodings differ:\npaho % x\ntern % x", pahoWire.Bytes(), ternWire)
			}
			if !bytes.Equal(c.Wire(), ternWire) {
				t.Fatal("Wire() is not the tern encoding")
			}

			var wantUsers [][2]string
			wantType := ""
			if c.Props {
				wantUsers, wantType = UserProperties(), ContentType
			}

			// paho decodes tern's bytes.
			cp, err := packets.ReadPacket(bytes.NewReader(ternWire))
			if err != nil {
				t.Fatal(err)
			}
			pp, ok := cp.Content.(*packets.Publish)
			if !ok {
				t.Fatalf("paho read a %T", cp.Content)
			}
			if pp.Topic != Topic || pp.QoS != QoS || pp.PacketID != PacketID ||
				!bytes.Equal(pp.Payload, c.Payload()) || pp.Properties.ContentType != wantType ||
				!slices.Equal(pahoUsers(pp.Properties.User), wantUsers) {
				t.Fatalf("paho decoded %v", pp)
			}

			// tern decodes paho's bytes, through the same path as the benchmark.
			r := packet.NewReader(bytes.NewReader(pahoWire.Bytes()), 4096)
			f, err := r.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Release()
			var tp packet.Publish
			if err := tp.Decode(f.Flags(), f.Body); err != nil {
				t.Fatal(err)
			}
			if tp.Topic != Topic || tp.QoS != QoS || tp.PacketID != PacketID ||
				!bytes.Equal(tp.Payload, c.Payload()) || tp.ContentType != wantType ||
				!slices.Equal(ternUsers(tp.UserProperties), wantUsers) {
				t.Fatalf("tern decoded %+v", tp)
			}
		})
	}
}

// TestBenchmarkNames pins the tree the README and cmd/codecratio describe.
func TestBenchmarkNames(t *testing.T) {
	t.Parallel()
	var got []string
	for _, b := range Benchmarks() {
		got = append(got, "lib="+b.Lib+"/"+b.Op+"/"+b.Case.Name())
	}
	if len(got) != 16 || got[0] != "lib=tern/encode/64B/noprops" ||
		got[15] != "lib=paho/decode/1KiB/props" {
		t.Fatalf("benchmark tree: %q", got)
	}
}
