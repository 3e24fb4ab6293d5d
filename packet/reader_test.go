package packet

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// readerStream is a handful of packets back to back, with what ReadFrame must return for each.
func readerStream() (stream []byte, frames []Frame) {
	add := func(header byte, body []byte) {
		stream = append(stream, header)
		stream = AppendVBI(stream, len(body))
		stream = append(stream, body...)
		frames = append(frames, Frame{Header: header, Body: body})
	}
	add(0xC0, nil)                                       // PINGREQ
	add(0x33, wire("00 01", txt("t"), "12 34 00 00 FF")) // PUBLISH QoS 1, RETAIN
	add(0x40, wire("12 34"))                             // PUBACK
	add(0x62, wire("00 0A 92"))                          // PUBREL with a reason code
	add(0x30, append(wire("00 01", txt("t"), "00"), bytes.Repeat([]byte{'x'}, 300)...))
	add(0xE0, nil) // DISCONNECT
	return stream, frames
}

func TestReaderSequence(t *testing.T) {
	t.Parallel()
	stream, want := readerStream()
	sources := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(stream) },
		"one-byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":     func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data-err": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
	}
	for name, src := range sources {
		for _, size := range []int{16, 4096} {
			r := NewReader(src(), size)
			for i, w := range want {
				f, err := r.ReadFrame()
				if err != nil {
					t.Fatalf("%s/%d: frame %d: %v", name, size, i, err)
				}
				if f.Header != w.Header || !bytes.Equal(f.Body, w.Body) {
					t.Errorf("%s/%d: frame %d = %#x % X, want %#x % X", name, size, i, f.Header, f.Body, w.Header, w.Body)
				}
				if f.Type() != Type(w.Header>>4) || f.Flags() != w.Header&0x0F {
					t.Errorf("%s/%d: frame %d: Type %v Flags %#x", name, size, i, f.Type(), f.Flags())
				}
				if _, err := Decode(&f); err != nil {
					t.Errorf("%s/%d: frame %d: Decode: %v", name, size, i, err)
				}
				f.Release()
			}
			// A clean end between packets is io.EOF itself, not wrapped, and stays so.
			for range 2 {
				if _, err := r.ReadFrame(); err != io.EOF {
					t.Errorf("%s/%d: after the last packet got %v, want io.EOF", name, size, err)
				}
			}
		}
	}
}

func TestReaderUnexpectedEOF(t *testing.T) {
	t.Parallel()
	cases := map[string][]byte{
		"header-only":         wire("30"),
		"in-length":           wire("30 80"),
		"in-length-3":         wire("30 FF FF"),
		"in-body":             wire("30 05 00 01"),
		"one-byte-short":      wire("30 05 00 01", txt("ab")),
		"second-packet-cut":   wire("C0 00", "40 02 00"),
		"length-only-no-body": wire("E0 01"),
	}
	for name, in := range cases {
		r := NewReader(bytes.NewReader(in), 16)
		var err error
		for err == nil {
			var f Frame
			f, err = r.ReadFrame()
			f.Release()
		}
		if err != io.ErrUnexpectedEOF {
			t.Errorf("%s: got %v, want io.ErrUnexpectedEOF", name, err)
		}
	}

	if _, err := NewReader(bytes.NewReader(nil), 16).ReadFrame(); err != io.EOF {
		t.Errorf("empty stream: got %v, want io.EOF", err)
	}

	// Errors other than EOF from the underlying reader come through as they are.
	boom := errors.New("boom")
	if _, err := NewReader(iotest.ErrReader(boom), 16).ReadFrame(); err != boom {
		t.Errorf("failing reader: got %v, want %v", err, boom)
	}
	mid := io.MultiReader(bytes.NewReader(wire("30 05 00")), iotest.ErrReader(boom))
	if _, err := NewReader(mid, 16).ReadFrame(); err != boom {
		t.Errorf("reader failing in the body: got %v, want %v", err, boom)
	}
}

// headerOnly hands out a fixed header and fails the test if anyone reads further: the body
// of a packet over the limit must not be read.
type headerOnly struct {
	t      *testing.T
	header []byte
}

func (h *headerOnly) Read(p []byte) (int, error) {
	if len(h.header) == 0 {
		h.t.Error("Reader read past the fixed header of a packet over the limit")
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, h.header)
	h.header = h.header[n:]
	return n, nil
}

func TestReaderMaxPacketSize(t *testing.T) {
	t.Parallel()
	// Remaining length 1000 takes two bytes, so the whole packet is 1003 bytes.
	header := wire("30 E8 07")
	cases := []struct {
		name   string
		header []byte
		max    int
	}{
		{"one-over", header, 1002},
		{"far-over", header, 10},
		{"largest-length", wire("30 FF FF FF 7F"), 1 << 20}, // would need 256 MiB
		{"header-counts", wire("30 80 01"), 130},            // 128 bytes of body, 131 in all
	}
	for _, c := range cases {
		r := NewReader(&headerOnly{t: t, header: c.header}, 16)
		r.SetMaxPacketSize(c.max)
		_, err := r.ReadFrame()
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: got %v, want ErrTooLarge", c.name, err)
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != PacketTooLarge {
			t.Errorf("%s: error %v does not carry reason code 0x95", c.name, err)
		}
		if errors.Is(err, ErrMalformed) || errors.Is(err, ErrProtocol) {
			t.Errorf("%s: ErrTooLarge also matches a class sentinel", c.name)
		}
	}

	// At exactly the limit the packet is accepted.
	body := bytes.Repeat([]byte{0x01}, 1000)
	r := NewReader(bytes.NewReader(append(wire("30 E8 07"), body...)), 16)
	r.SetMaxPacketSize(1003)
	f, err := r.ReadFrame()
	if err != nil || !bytes.Equal(f.Body, body) {
		t.Fatalf("packet at the limit: %v", err)
	}
	f.Release()

	// Out-of-range limits fall back to the protocol's own.
	for _, n := range []int{0, -1, MaxPacketSize + 1} {
		r.SetMaxPacketSize(n)
		if r.max != MaxPacketSize {
			t.Errorf("SetMaxPacketSize(%d): limit %d, want %d", n, r.max, MaxPacketSize)
		}
	}
	if MaxPacketSize != 268435460 {
		t.Errorf("MaxPacketSize = %d", MaxPacketSize)
	}
}

// cycle repeats its bytes forever.
type cycle struct {
	b   []byte
	off int
}

func (c *cycle) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.b[c.off]
		c.off = (c.off + 1) % len(c.b)
	}
	return len(p), nil
}

// TestReaderTooLargeNoAlloc checks that refusing an oversized packet allocates nothing. It
// does not run in parallel: AllocsPerRun counts every goroutine's allocations.
func TestReaderTooLargeNoAlloc(t *testing.T) {
	r := NewReader(&cycle{b: wire("30 E8 07")}, 64)
	r.SetMaxPacketSize(100)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := r.ReadFrame(); err != ErrTooLarge {
			t.Fatalf("got %v, want ErrTooLarge", err)
		}
	})
	if allocs != 0 {
		t.Errorf("refusing an oversized packet allocated %.1f times per call", allocs)
	}
}

func TestFrameRelease(t *testing.T) {
	t.Parallel()
	r := NewReader(bytes.NewReader(wire("30 04 00 01", txt("a"), "00", "C0 00")), 16)
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	f.Release()
	if f.Body != nil {
		t.Error("Body kept after Release")
	}
	f.Release() // a second release is a no-op

	empty, err := r.ReadFrame() // PINGREQ: no body, no buffer
	if err != nil {
		t.Fatal(err)
	}
	empty.Release()
	empty.Release()
	var zero Frame
	zero.Release()

	// Detach hands the buffer over; the frame's own Release then leaves it alone.
	r = NewReader(bytes.NewReader(wire("30 04 00 01", txt("b"), "00")), 16)
	f, err = r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	body := f.Body
	buf := f.Detach()
	if buf == nil || &buf.B[0] != &body[0] {
		t.Fatal("Detach did not return the frame's buffer")
	}
	f.Release()
	if !bytes.Equal(buf.B, wire("00 01", txt("b"), "00")) {
		t.Errorf("detached buffer changed by the frame's Release: % X", buf.B)
	}
	buf.Release()
	if f.Detach() != nil {
		t.Error("second Detach returned a buffer")
	}
}

// TestReleasedBufferPoisoned checks the race-build guard: a released buffer is overwritten,
// so a view kept past Release reads garbage. It does not run in parallel, so no other test can
// take the buffer from the pool while it is inspected.
func TestReleasedBufferPoisoned(t *testing.T) {
	if !poisonReleased {
		t.Skip("released buffers are poisoned only under the race detector")
	}
	r := NewReader(bytes.NewReader(wire("30 04 00 01", txt("a"), "00")), 16)
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	body := f.Body
	f.Release()
	for i, c := range body[:cap(body)] {
		if c != 0xA5 {
			t.Fatalf("byte %d of a released buffer is %#x, want 0xA5", i, c)
		}
	}
}

func TestPublishCloneIndependent(t *testing.T) {
	t.Parallel()
	var full *Publish
	var in []byte
	for _, c := range goldenCases() {
		if c.name == "publish/qos2-all-properties" {
			full, in = c.p.(*Publish), c.want
		}
	}
	r := NewReader(bytes.NewReader(in), 16)
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	var p Publish
	if err := p.Decode(f.Flags(), f.Body); err != nil {
		t.Fatal(err)
	}
	c := p.Clone()
	if !reflect.DeepEqual(c, full) {
		t.Fatalf("clone\n %#v\nwant\n %#v", c, full)
	}

	// Scribble over the frame: the decoded view follows it, the clone must not.
	for i := range f.Body {
		f.Body[i] = 0xEE
	}
	if p.Topic == full.Topic {
		t.Fatal("the decoded Publish does not alias the frame; the test proves nothing")
	}
	f.Release()
	if !reflect.DeepEqual(c, full) {
		t.Errorf("clone changed with the frame\n %#v\nwant\n %#v", c, full)
	}

	// Changing the clone's slices leaves the original alone.
	c.SubscriptionIDs[0] = 99
	c.UserProperties[0].Value = "changed"
	q := &Publish{Topic: "t", SubscriptionIDs: []uint32{1}, UserProperties: []UserProperty{{"k", "v"}}}
	qc := q.Clone()
	qc.SubscriptionIDs[0], qc.UserProperties[0].Value = 2, "w"
	if q.SubscriptionIDs[0] != 1 || q.UserProperties[0].Value != "v" {
		t.Error("Clone shares slices with the original")
	}

	// Absent fields stay absent.
	e := (&Publish{Topic: "t"}).Clone()
	if e.Payload != nil || e.CorrelationData != nil || e.UserProperties != nil || e.SubscriptionIDs != nil {
		t.Errorf("Clone of empty fields: %#v", e)
	}
}

type validator interface{ Validate() error }

func TestValidate(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("a", 65536)
	bigBytes := make([]byte, 65536)
	sub := func(s Subscription) *Subscribe {
		return &Subscribe{PacketID: 1, Subscriptions: []Subscription{s}}
	}
	cases := []struct {
		name string
		v    validator
		want error
	}{
		{"publish/ok", &Publish{Topic: "a/b", QoS: 1, PacketID: 1}, nil},
		{"publish/alias-only", &Publish{TopicAlias: 1}, nil},
		{"publish/empty-topic", &Publish{}, ErrEmptyTopic},
		{"publish/wildcard", &Publish{Topic: "a/+"}, ErrWildcardInTopic},
		{"publish/hash", &Publish{Topic: "#"}, ErrWildcardInTopic},
		{"publish/qos3", &Publish{Topic: "a", QoS: 3}, ErrInvalidQoS},
		{"publish/no-packet-id", &Publish{Topic: "a", QoS: 1}, ErrMissingPacketID},
		{"publish/no-packet-id-qos2", &Publish{Topic: "a", QoS: 2}, ErrMissingPacketID},
		{"publish/bad-utf8", &Publish{Topic: "a\xff"}, ErrInvalidUTF8},
		{"publish/surrogate", &Publish{Topic: "\xed\xa0\x80"}, ErrInvalidUTF8},
		{"publish/nul", &Publish{Topic: "a\x00"}, ErrNullChar},
		{"publish/topic-too-long", &Publish{Topic: big}, ErrFieldTooLong},
		{"publish/response-topic-wildcard", &Publish{Topic: "a", ResponseTopic: "r/#"}, ErrWildcardInTopic},
		{"publish/content-type-utf8", &Publish{Topic: "a", ContentType: "\xff"}, ErrInvalidUTF8},
		{"publish/correlation-too-long", &Publish{Topic: "a", CorrelationData: bigBytes}, ErrFieldTooLong},
		{"publish/payload-format", &Publish{Topic: "a", PayloadFormat: 2}, ErrInvalidProperty},
		{"publish/subscription-id-0", &Publish{Topic: "a", SubscriptionIDs: []uint32{0}}, ErrInvalidProperty},
		{"publish/subscription-id-big",
			&Publish{Topic: "a", SubscriptionIDs: []uint32{MaxVBI + 1}}, ErrInvalidProperty},
		{"publish/user-property-nul",
			&Publish{Topic: "a", UserProperties: []UserProperty{{"k\x00", "v"}}}, ErrNullChar},

		{"subscribe/ok", sub(Subscription{Filter: "$share/g/a/#", QoS: 2, RetainHandling: 2}), nil},
		{"subscribe/no-packet-id", &Subscribe{Subscriptions: []Subscription{{Filter: "a"}}}, ErrMissingPacketID},
		{"subscribe/empty", &Subscribe{PacketID: 1}, ErrEmptySubscription},
		{"subscribe/empty-filter", sub(Subscription{}), ErrEmptyTopic},
		{"subscribe/bad-filter", sub(Subscription{Filter: "a/#/b"}), ErrInvalidFilter},
		{"subscribe/empty-share-name", sub(Subscription{Filter: "$share//a"}), ErrInvalidShare},
		{"subscribe/share-no-filter", sub(Subscription{Filter: "$share/g"}), ErrInvalidShare},
		{"subscribe/no-local-shared", sub(Subscription{Filter: "$share/g/a", NoLocal: true}), ErrInvalidShare},
		{"subscribe/qos3", sub(Subscription{Filter: "a", QoS: 3}), ErrInvalidQoS},
		{"subscribe/retain-handling-3", sub(Subscription{Filter: "a", RetainHandling: 3}), ErrInvalidProperty},
		{"subscribe/subscription-id-big", &Subscribe{PacketID: 1, SubscriptionID: MaxVBI + 1,
			Subscriptions: []Subscription{{Filter: "a"}}}, ErrInvalidProperty},
		{"subscribe/filter-nul", sub(Subscription{Filter: "a\x00"}), ErrNullChar},

		{"unsubscribe/ok", &Unsubscribe{PacketID: 1, Filters: []string{"a/+", "$share/g/#"}}, nil},
		{"unsubscribe/empty", &Unsubscribe{PacketID: 1}, ErrEmptySubscription},
		{"unsubscribe/no-packet-id", &Unsubscribe{Filters: []string{"a"}}, ErrMissingPacketID},
		{"unsubscribe/bad-share", &Unsubscribe{PacketID: 1, Filters: []string{"$share/g+/a"}}, ErrInvalidShare},

		{"ack/ok", &Ack{Kind: PUBACK, PacketID: 1}, nil},
		{"ack/no-packet-id", &Ack{Kind: PUBREL}, ErrMissingPacketID},
		{"ack/reason-string-utf8", &Ack{Kind: PUBACK, PacketID: 1, ReasonString: "\xff"}, ErrInvalidUTF8},
		{"ack/user-property-too-long",
			&Ack{Kind: PUBACK, PacketID: 1, UserProperties: []UserProperty{{"k", big}}}, ErrFieldTooLong},

		{"connect/ok", &Connect{ClientID: "c", Will: &Will{Topic: "w", QoS: 2}}, nil},
		{"connect/client-id-nul", &Connect{ClientID: "\x00"}, ErrNullChar},
		{"connect/username-utf8", &Connect{Username: "\xff"}, ErrInvalidUTF8},
		{"connect/password-too-long", &Connect{Password: bigBytes}, ErrFieldTooLong},
		{"connect/auth-data-without-method", &Connect{AuthData: []byte{1}}, ErrInvalidProperty},
		{"connect/will-empty-topic", &Connect{Will: &Will{}}, ErrEmptyTopic},
		{"connect/will-wildcard", &Connect{Will: &Will{Topic: "a/+"}}, ErrWildcardInTopic},
		{"connect/will-qos3", &Connect{Will: &Will{Topic: "a", QoS: 3}}, ErrInvalidQoS},
		{"connect/will-payload-format", &Connect{Will: &Will{Topic: "a", PayloadFormat: 2}}, ErrInvalidProperty},
		{"connect/will-payload-too-long", &Connect{Will: &Will{Topic: "a", Payload: bigBytes}}, ErrFieldTooLong},
		{"connect/will-response-topic", &Connect{Will: &Will{Topic: "a", ResponseTopic: ""}}, nil},
		{"connect/will-response-topic-wildcard",
			&Connect{Will: &Will{Topic: "a", ResponseTopic: "#"}}, ErrWildcardInTopic},

		{"disconnect/ok", &Disconnect{ReasonCode: ServerMoved, ServerReference: "x"}, nil},
		{"disconnect/reason-code-not-in-table", &Disconnect{ReasonCode: GrantedQoS2}, ErrInvalidProperty},
		{"disconnect/reason-string-surrogate", &Disconnect{ReasonString: "\xed\xa0\x80"}, ErrInvalidUTF8},
		{"auth/ok", &Auth{ReasonCode: ContinueAuthentication, AuthMethod: "m"}, nil},
		{"auth/bad-reason-code", &Auth{ReasonCode: UnspecifiedError}, ErrInvalidProperty},
		{"auth/method-nul", &Auth{ReasonCode: ReAuthenticate, AuthMethod: "m\x00"}, ErrNullChar},
		{"auth/data-too-long", &Auth{AuthData: bigBytes}, ErrFieldTooLong},
	}
	for _, c := range cases {
		err := c.v.Validate()
		if c.want == nil {
			if err != nil {
				t.Errorf("%s: Validate() = %v, want nil", c.name, err)
			}
			continue
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Validate() = %v, want %v", c.name, err, c.want)
		}
	}

	// Every golden packet is one a sender may send.
	for _, c := range goldenCases() {
		if v, ok := c.p.(validator); ok {
			if err := v.Validate(); err != nil {
				t.Errorf("golden %s: Validate() = %v", c.name, err)
			}
		}
	}
}

// A large declared length costs memory only as its bytes arrive.
func TestReaderLargeBodyGrowsWithData(t *testing.T) {
	hdr := []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F} // PUBLISH claiming 268435455 bytes
	r := NewReader(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(make([]byte, 10))), 64)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := r.ReadFrame()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("allocated %d bytes for a 10-byte body", grew)
	}
	// A real large body is read whole.
	body := bytes.Repeat([]byte{7}, 3<<20)
	pkt := (&Publish{Topic: "big", Payload: body}).AppendTo(nil)
	f, err := NewReader(bytes.NewReader(pkt), 4096).ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	var p Publish
	if err := p.Decode(f.Flags(), f.Body); err != nil || !bytes.Equal(p.Payload, body) {
		t.Fatalf("large body: %v", err)
	}
	f.Release()
}

// TestFrameBuffered: a frame counts as buffered only when all of its bytes are, so a batch
// that ends on a partial frame is never held open across a blocking read.
func TestFrameBuffered(t *testing.T) {
	ping := []byte{0xC0, 0x00}
	long := append([]byte{0x30, 0x80, 0x01}, make([]byte, 128)...) // Remaining Length 128
	for _, tc := range []struct {
		name string
		in   []byte
		want bool
	}{
		{"empty", nil, false},
		{"header byte only", ping[:1], false},
		{"whole PINGRESP", ping, true},
		{"two-byte length cut", long[:2], false},
		{"body cut", long[:len(long)-1], false},
		{"whole long frame", long, true},
		{"whole frame then part", append(append([]byte{}, ping...), 0x30), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			r := NewReader(pr, 4096)
			go func() { pw.Write(tc.in); pw.Close() }()
			if len(tc.in) > 0 {
				// Fill the buffer with what was written (one Write is one read here: it
				// fits the reader's small buffer), then ask.
				if err := r.br.fill(); err != nil {
					t.Fatal(err)
				}
				if r.br.buffered() != len(tc.in) {
					t.Fatalf("buffered %d of %d bytes", r.br.buffered(), len(tc.in))
				}
			}
			if got := r.FrameBuffered(); got != tc.want {
				t.Fatalf("FrameBuffered() = %v, want %v", got, tc.want)
			}
			io.Copy(io.Discard, pr)
		})
	}
}

// SkipTooLarge moves past a refused packet: the caller gets its header and the start of
// its body, and the next ReadFrame returns the packet after it.
func TestSkipTooLarge(t *testing.T) {
	big := Publish{Topic: "big/t", QoS: 1, PacketID: 7, Payload: bytes.Repeat([]byte{'x'}, 5000), Version: Version311}
	small := Publish{Topic: "s", Payload: []byte("ok"), Version: Version311}
	var stream []byte
	stream = big.AppendTo(stream)
	stream = small.AppendTo(stream)
	r := NewReader(bytes.NewReader(stream), 512)
	if _, _, err := r.SkipTooLarge(10); err == nil {
		t.Fatal("SkipTooLarge before any refusal succeeded")
	}
	r.SetMaxPacketSize(1000)
	if _, err := r.ReadFrame(); err != ErrTooLarge {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	h, prefix, err := r.SkipTooLarge(2 + len(big.Topic) + 2)
	if err != nil {
		t.Fatal(err)
	}
	if Type(h>>4) != PUBLISH || (h>>1)&3 != 1 {
		t.Fatalf("header %#x", h)
	}
	if want := []byte{0, 5, 'b', 'i', 'g', '/', 't', 0, 7}; !bytes.Equal(prefix, want) {
		t.Fatalf("prefix % x, want % x", prefix, want)
	}
	if _, _, err := r.SkipTooLarge(10); err == nil {
		t.Fatal("skipped the same packet twice")
	}
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	var got Publish
	got.Version = Version311
	if err := got.Decode(f.Flags(), f.Body); err != nil || got.Topic != "s" || string(got.Payload) != "ok" {
		t.Fatalf("next packet %+v %v", got, err)
	}
	// A stream that ends inside the skipped body.
	r = NewReader(bytes.NewReader(stream[:3000]), 512)
	r.SetMaxPacketSize(1000)
	if _, err := r.ReadFrame(); err != ErrTooLarge {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if _, _, err := r.SkipTooLarge(100); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated body: %v", err)
	}
}
