package tern

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

// Decoding of what the fault proxy recorded, so a fault test can show in bytes what the
// client and the broker said to each other around a fault.

// wirePacket is one MQTT packet seen on a recorded connection.
type wirePacket struct {
	Conn    int       // the proxy's connection number
	Dir     int       // faultproxy.Up (client to broker) or faultproxy.Down
	At      time.Time // when the segment that ends the packet was read
	Kind    packet.Type
	ID      uint16 // packet identifier, 0 if none
	QoS     byte
	Dup     bool
	Payload string
	Code    packet.ReasonCode // acknowledgements, CONNACK, DISCONNECT
	Session bool              // CONNACK: Session Present
	Raw     []byte            // the whole packet as it crossed the wire
}

func (w wirePacket) String() string {
	dir := "client->broker"
	if w.Dir == faultproxy.Down {
		dir = "broker->client"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "conn %d %s %-7v", w.Conn, dir, w.Kind)
	switch w.Kind {
	case packet.PUBLISH:
		fmt.Fprintf(&b, " id=%d qos=%d dup=%v payload=%q", w.ID, w.QoS, w.Dup, w.Payload)
	case packet.PUBACK, packet.PUBREC, packet.PUBREL, packet.PUBCOMP:
		fmt.Fprintf(&b, " id=%d code=0x%02x", w.ID, byte(w.Code))
	case packet.CONNACK:
		fmt.Fprintf(&b, " session-present=%v code=0x%02x", w.Session, byte(w.Code))
	}
	raw := w.Raw
	if len(raw) > 24 {
		raw = raw[:24]
	}
	fmt.Fprintf(&b, " bytes % x", raw)
	if len(w.Raw) > len(raw) {
		b.WriteString(" ...")
	}
	return b.String()
}

// decodeRecording splits each recorded connection and direction into packets, ordered by
// the time each was read (by connection, direction and position where times are equal). A
// stream that ends inside a packet (a cut) ends at its last whole packet. Both directions of
// a connection are decoded at the protocol level its CONNECT names (MQTT 5 without one).
func decodeRecording(segs []faultproxy.Segment) []wirePacket {
	type key struct{ conn, dir int }
	type stream struct {
		data  []byte
		ends  []int // offset just past each segment
		times []time.Time
	}
	streams := make(map[key]*stream)
	var keys []key
	for _, sg := range segs {
		k := key{sg.Conn, sg.Dir}
		s := streams[k]
		if s == nil {
			s = new(stream)
			streams[k] = s
			keys = append(keys, k)
		}
		s.data = append(s.data, sg.Data...)
		s.ends = append(s.ends, len(s.data))
		s.times = append(s.times, sg.At)
	}
	levels := make(map[int]byte)
	for _, k := range keys {
		if k.dir == faultproxy.Up {
			levels[k.conn] = connectLevel(streams[k].data)
		}
	}
	var out []wirePacket
	for _, k := range keys {
		s := streams[k]
		r := packet.NewReader(bytes.NewReader(s.data), 1<<28)
		off := 0
		for {
			f, err := r.ReadFrame()
			if err != nil {
				break
			}
			n := 1 + packet.VBILen(len(f.Body)) + len(f.Body)
			w := wirePacket{Conn: k.conn, Dir: k.dir, Kind: f.Type(), Raw: s.data[off : off+n]}
			off += n
			w.At = s.times[min(segmentOf(s.ends, off), len(s.times)-1)]
			describe(&w, &f, levels[k.conn])
			f.Release()
			out = append(out, w)
		}
	}
	slices.SortStableFunc(out, func(a, b wirePacket) int { return a.At.Compare(b.At) })
	return out
}

// connectLevel returns the protocol level named by the CONNECT a client stream starts with,
// or packet.Version5 when it does not start with a whole one.
func connectLevel(stream []byte) byte {
	f, err := packet.NewReader(bytes.NewReader(stream), 1<<28).ReadFrame()
	if err != nil {
		return packet.Version5
	}
	defer f.Release()
	if c, ok := must(packet.Decode(&f)).(*packet.Connect); ok && c.Version == packet.Version311 {
		return packet.Version311
	}
	return packet.Version5
}

// must returns p, or nil when err is set.
func must(p packet.Packet, err error) packet.Packet {
	if err != nil {
		return nil
	}
	return p
}

// segmentOf returns the index of the first segment end at or past off.
func segmentOf(ends []int, off int) int {
	i, _ := slices.BinarySearch(ends, off)
	return i
}

// describe fills w's decoded fields from f; a packet that does not decode keeps its kind.
func describe(w *wirePacket, f *packet.Frame, level byte) {
	p, err := packet.DecodeVersion(f, level)
	if err != nil {
		return
	}
	switch p := p.(type) {
	case *packet.Publish:
		w.ID, w.QoS, w.Dup, w.Payload = p.PacketID, p.QoS, p.Dup, string(p.Payload)
	case *packet.Ack:
		w.ID, w.Code = p.PacketID, p.ReasonCode
	case *packet.Connack:
		w.Session, w.Code = p.SessionPresent, p.ReasonCode
	case *packet.Disconnect:
		w.Code = p.ReasonCode
	}
}

// wireStory returns, for one message told by its payload, every packet that carried it or
// shared its packet identifier from its first sending to its last, across connections, with
// the events (such as broker restarts, and the client's receipt deletions for those
// identifiers) that fell in between, each timed from the first.
func wireStory(pkts []wirePacket, rel []receiptRelease, payload string, events map[time.Time]string) string {
	first, last := -1, -1
	ids := make(map[uint16]bool)
	for i, w := range pkts {
		if w.Kind == packet.PUBLISH && w.Dir == faultproxy.Down && w.Payload == payload {
			if first < 0 {
				first = i
			}
			last = i
			ids[w.ID] = true
		}
	}
	if first < 0 {
		return fmt.Sprintf("payload %q: never seen on the wire", payload)
	}
	// Carry on to the acknowledgements that answer the last copy.
	end := last
	for i := last + 1; i < len(pkts) && i <= last+5000; i++ {
		if ids[pkts[i].ID] && pkts[i].Conn == pkts[last].Conn {
			end = i
			if pkts[i].Kind == packet.PUBCOMP {
				break
			}
		}
	}
	t0 := pkts[first].At
	var b strings.Builder
	fmt.Fprintf(&b, "payload %q:\n", payload)
	events = maps.Clone(events)
	for _, r := range rel {
		if ids[r.id] {
			events[r.at] = fmt.Sprintf("client deletes its receipt for id %d (PUBREL handled)", r.id)
		}
	}
	var evs []time.Time
	for at := range events {
		evs = append(evs, at)
	}
	slices.SortFunc(evs, time.Time.Compare)
	for i := first; i <= end; i++ {
		w := pkts[i]
		for len(evs) > 0 && !evs[0].After(w.At) {
			if evs[0].After(t0) {
				fmt.Fprintf(&b, "  %+9.3fms  -- %s\n", ms(evs[0].Sub(t0)), events[evs[0]])
			}
			evs = evs[1:]
		}
		relevant := ids[w.ID] && w.ID != 0
		if relevant || w.Kind == packet.CONNECT || w.Kind == packet.CONNACK || w.Kind == packet.DISCONNECT {
			fmt.Fprintf(&b, "  %+9.3fms  %v\n", ms(w.At.Sub(t0)), w)
		}
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// receiptLog is a MemoryStore that notes when the client deletes an inbound QoS 2 receipt.
// The client deletes it when it handles PUBREL, before PUBCOMP is written (the Store
// contract), so the note says the exchange was complete on the client's side even when the
// connection closed before PUBCOMP reached the wire.
type receiptLog struct {
	*MemoryStore
	mu       sync.Mutex
	released []receiptRelease
}

type receiptRelease struct {
	id uint16
	at time.Time
}

func newReceiptLog() *receiptLog { return &receiptLog{MemoryStore: NewMemoryStore()} }

// Delete implements Store. The client may call it under its own lock: it only appends.
func (s *receiptLog) Delete(kind RecordKind, id uint16) error {
	if kind == RecordInbound {
		s.mu.Lock()
		s.released = append(s.released, receiptRelease{id, time.Now()})
		s.mu.Unlock()
	}
	return s.MemoryStore.Delete(kind, id)
}

func (s *receiptLog) releases() []receiptRelease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.released)
}

// qos2Exchange is what the wire and the client's store showed of one inbound QoS 2 exchange
// under one identifier.
type qos2Exchange struct {
	payload string
	pubrel  bool // the broker sent PUBREL: by [MQTT-4.3.3-6] it must not send the PUBLISH again
	done    bool // after which the client deleted its receipt: complete on the client's side
}

// qos2Replays goes through the packets of a subscriber's connections and the releases of
// its receipts in time order, and counts the broker's QoS 2 resends (DUP=1) of two kinds:
// replayed, per payload, those of an exchange the broker had released with PUBREL and the
// client had then completed; and open, those of an exchange whose receipt the client still
// held. A copy with DUP=0, a different payload or a QoS 1 PUBLISH under an identifier starts
// a new exchange for it.
func qos2Replays(pkts []wirePacket, rel []receiptRelease) (replayed map[string]int, open int) {
	replayed = make(map[string]int)
	ex := make(map[uint16]*qos2Exchange)
	for _, w := range pkts {
		for len(rel) > 0 && rel[0].at.Before(w.At) {
			if st := ex[rel[0].id]; st != nil && st.pubrel {
				st.done = true
			}
			rel = rel[1:]
		}
		st := ex[w.ID]
		switch {
		case w.Kind == packet.PUBLISH && w.Dir == faultproxy.Down && w.QoS == 1:
			delete(ex, w.ID)
		case w.Kind == packet.PUBLISH && w.Dir == faultproxy.Down && w.QoS == 2:
			switch {
			case st != nil && w.Dup && st.payload == w.Payload && st.done:
				replayed[w.Payload]++
			case st != nil && w.Dup && st.payload == w.Payload:
				open++
			default:
				ex[w.ID] = &qos2Exchange{payload: w.Payload}
			}
		case w.Kind == packet.PUBREL && w.Dir == faultproxy.Down && st != nil:
			st.pubrel = true
		}
	}
	return replayed, open
}

// checkQoS2Replays fails t for every QoS 2 message the subscriber got more often than its
// traffic explains: a delivery beyond the first is allowed only for a copy the broker sent
// after it had released the exchange with PUBREL and the client had handled that PUBREL
// (see TestFaultBrokerRestart). Such replays, if any, are logged with the bytes of one.
func checkQoS2Replays(t *testing.T, sink *seqSink, rec []faultproxy.Segment, receipts *receiptLog,
	events map[time.Time]string, qosOf func(int) byte, killed bool) {
	t.Helper()
	pkts := decodeRecording(rec)
	rel := receipts.releases()
	replayed, open := qos2Replays(pkts, rel)
	var bad []string
	again, example := 0, ""
	for _, seq := range sink.repeated() {
		if qosOf(seq) != 2 {
			continue
		}
		p := strconv.Itoa(seq)
		extra := sink.deliveries(seq) - 1
		if extra > replayed[p] {
			bad = append(bad, p)
			continue
		}
		again += extra
		if example == "" {
			example = p
		}
	}
	nReplayed := 0
	for _, n := range replayed {
		nReplayed += n
	}
	t.Logf("QoS 2 resends: %d while the client held the receipt (none may be delivered again); %d replays "+
		"of exchanges the broker had released with PUBREL and the client completed, %d delivered again",
		open, nReplayed, again)
	if example != "" {
		t.Logf("a replay: the broker resent as PUBLISH (DUP=1) a message it had released with PUBREL, "+
			"breaking [MQTT-4.3.3-6]; to the client it is a new message under a reused identifier. %s",
			wireStory(pkts, rel, example, events))
	}
	for i, p := range bad {
		if i == 3 {
			break
		}
		t.Errorf("QoS 2 message %s delivered more often than the broker replayed it (broker killed at a restart: %v); %s",
			p, killed, wireStory(pkts, rel, p, events))
	}
	if len(bad) > 0 {
		t.Errorf("%d QoS 2 messages delivered twice while the client held their receipts", len(bad))
	}
}
