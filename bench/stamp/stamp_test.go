package stamp

import (
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, size := range []int{MinSize, 64, 1024, 64 << 10} {
		f, err := NewFormat(7, size)
		if err != nil {
			t.Fatal(err)
		}
		buf := f.New()
		for _, seq := range []uint64{0, 1, 1 << 40} {
			f.Stamp(buf, seq, 12345)
			got, ts, err := f.Parse(buf)
			if err != nil || got != seq || ts != 12345 {
				t.Fatalf("size %d seq %d: got %d %d %v", size, seq, got, ts, err)
			}
		}
	}
	if _, err := NewFormat(1, MinSize-1); err == nil {
		t.Fatal("a payload below MinSize was accepted")
	}
}

func TestParseRejects(t *testing.T) {
	f, _ := NewFormat(7, 64)
	other, _ := NewFormat(8, 64)
	good := f.New()
	f.Stamp(good, 3, 0)
	for _, tc := range []struct {
		name string
		mut  func([]byte) []byte
		want error
	}{
		{"short", func(b []byte) []byte { return b[:63] }, ErrTorn},
		{"long", func(b []byte) []byte { return append(b, 0) }, ErrTorn},
		{"magic", func(b []byte) []byte { b[0] ^= 1; return b }, ErrTorn},
		{"filler", func(b []byte) []byte { b[30] ^= 1; return b }, ErrTorn},
		{"trailer", func(b []byte) []byte { b[63] ^= 1; return b }, ErrTorn},
		{"run", func(b []byte) []byte { other.Stamp(b, 3, 0); copy(b[4:8], []byte{0, 0, 0, 8}); return b }, ErrForeign},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mut(append([]byte(nil), good...))
			if _, _, err := f.Parse(b); !errors.Is(err, tc.want) {
				t.Fatalf("Parse: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestChecker(t *testing.T) {
	f, _ := NewFormat(1, 64)
	other, _ := NewFormat(2, 64)
	k := NewChecker(f, 5)
	buf := f.New()
	for _, seq := range []uint64{0, 1, 1, 3, 9} {
		f.Stamp(buf, seq, 0)
		k.Check(buf)
	}
	ob := other.New()
	other.Stamp(ob, 2, 0)
	k.Check(ob)
	k.Check(buf[:10])
	c, _ := k.Counts()
	want := Counts{Expected: 5, Unique: 3, Duplicates: 1, Torn: 1, Unknown: 2}
	if c != want {
		t.Fatalf("counts %+v, want %+v", c, want)
	}
	if c.Missing() != 2 || k.Done() {
		t.Fatalf("missing %d done %v", c.Missing(), k.Done())
	}
	if err := c.Verdict(false); err == nil {
		t.Fatal("verdict passed with losses")
	}
	for _, seq := range []uint64{2, 4} {
		f.Stamp(buf, seq, 0)
		if k.Check(buf) == 0 {
			t.Fatalf("seq %d not counted as new", seq)
		}
	}
	if !k.Done() {
		t.Fatal("not done with every message")
	}
	c, _ = k.Counts()
	c.Torn, c.Unknown = 0, 0
	if err := c.Verdict(true); err != nil {
		t.Fatalf("verdict with duplicates allowed: %v", err)
	}
	if err := c.Verdict(false); err == nil {
		t.Fatal("verdict passed a duplicate")
	}
}

func TestCheckAllocatesNothing(t *testing.T) {
	f, _ := NewFormat(1, 1024)
	k := NewChecker(f, 1000)
	buf := f.New()
	i := uint64(0)
	if n := testing.AllocsPerRun(500, func() {
		f.Stamp(buf, i, 1)
		k.Check(buf)
		i++
	}); n != 0 {
		t.Fatalf("%v allocations per message", n)
	}
}
