package main

import (
	"cmp"
	"encoding/binary"
	"slices"
	"sync"
)

// A bench payload starts with a stamp: who sent it, its place in the sender's sequence and
// the time it was due, so a receiver can check exactly-once delivery and measure latency
// without trusting the sender's bookkeeping. The rest of the payload is padding.
//
//	[0:4]   magic "tbn1"
//	[4:12]  run id (random per process run; two runs on one topic stay apart)
//	[12:16] client index
//	[16:24] sequence number, from 0
//	[24:32] due time, Unix nanoseconds: the scheduled time in open loop, else the send time
const (
	stampSize  = 32
	stampMagic = "tbn1"
)

// stamp is the decoded header of a bench payload.
type stamp struct {
	run    uint64
	client uint32
	seq    uint64
	due    int64
}

// put writes s into the first stampSize bytes of b.
func (s stamp) put(b []byte) {
	copy(b, stampMagic)
	binary.BigEndian.PutUint64(b[4:], s.run)
	binary.BigEndian.PutUint32(b[12:], s.client)
	binary.BigEndian.PutUint64(b[16:], s.seq)
	binary.BigEndian.PutUint64(b[24:], uint64(s.due))
}

// parseStamp reads the stamp of b; false when b is not a bench payload (a foreign message
// on the topic), which the receiver counts apart.
func parseStamp(b []byte) (stamp, bool) {
	if len(b) < stampSize || string(b[:4]) != stampMagic {
		return stamp{}, false
	}
	return stamp{
		run:    binary.BigEndian.Uint64(b[4:]),
		client: binary.BigEndian.Uint32(b[12:]),
		seq:    binary.BigEndian.Uint64(b[16:]),
		due:    int64(binary.BigEndian.Uint64(b[24:])),
	}, true
}

// pubKey names one publisher: a client of one run.
type pubKey struct {
	run    uint64
	client uint32
}

// pubTrack is what one receiving side has seen of one publisher.
type pubTrack struct {
	base     uint64   // sequence number of bit 0 of seen, a multiple of 64
	seen     []uint64 // bit per sequence number from base
	low      uint64   // lowest sequence seen (0 for a publisher known to start at 0)
	floor    uint64   // sequence numbers below it were slid out of seen (see slide)
	next     uint64   // highest sequence seen + 1
	distinct uint64
	dups     uint64
	reorders uint64 // arrived after a higher sequence number of the same publisher
}

// Bounds on what a hostile or broken publisher can make a receiver keep: a sequence number
// more than maxSeqJump away from those seen, and publishers beyond maxPublishers per
// receiving side, count as foreign. A bitmap so grows by at most 128 KiB per jump.
// All bitmaps of one receiving side together stay under maxWords (64 MiB). When a bitmap
// would pass it, the publisher's bitmap slides instead: the part more than maxSeqJump below
// its highest sequence number is dropped (what it lacks there stays counted as lost, since
// loss is expected minus distinct), so a long run of any length keeps being counted; a
// message that arrives later than that (more than maxSeqJump late) counts as foreign.
const (
	maxSeqJump    = 1 << 20
	maxPublishers = 100_000
	maxWords      = 1 << 23
)

// tracker counts, per publisher, what one receiving side got: each non-shared subscriber
// has its own; the members of a shared subscription share one, since together they should
// see each message once. Safe for concurrent use.
type tracker struct {
	mu       sync.Mutex
	pubs     map[pubKey]*pubTrack
	zeroBase bool   // publishers start at sequence 0 (this process's own, in pubsub)
	words    int    // bitmap words of all publishers, at most limit
	limit    int    // bound on words: maxWords
	foreign  uint64 // messages without a bench stamp, of another run, or out of bounds
}

// newTracker returns a tracker. Without zeroBase a publisher's count starts at the first
// sequence number received: a sub run may join a publisher mid-way.
func newTracker(zeroBase bool) *tracker {
	return &tracker{pubs: make(map[pubKey]*pubTrack), zeroBase: zeroBase, limit: maxWords}
}

// add records one message; it returns false for a duplicate or a foreign one.
func (t *tracker) add(s stamp) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := pubKey{s.run, s.client}
	p := t.pubs[k]
	fresh := p == nil
	if fresh {
		if len(t.pubs) >= maxPublishers {
			t.foreign++
			return false
		}
		p = &pubTrack{}
		if !t.zeroBase {
			p.base, p.low, p.next = s.seq&^63, s.seq, s.seq
		}
	}
	switch {
	case s.seq >= p.next && s.seq-p.next >= maxSeqJump, s.seq < p.base && p.base-s.seq > maxSeqJump:
		t.foreign++
		return false
	case s.seq < p.floor:
		t.foreign++ // later than the window the bitmap keeps
		return false
	case s.seq < p.base:
		// Earlier than the first one seen (members of a shared group race): grow downwards.
		nb := s.seq &^ 63
		grow := int((p.base - nb) / 64)
		if t.words+grow > t.limit {
			t.foreign++
			return false
		}
		t.words += grow
		p.seen = append(make([]uint64, grow), p.seen...)
		p.base = nb
	}
	p.low = min(p.low, s.seq)
	if fresh {
		t.pubs[k] = p
	}
	off := s.seq - p.base
	w := int(off / 64)
	if w >= len(p.seen) {
		grow := w + 1 - len(p.seen) + len(p.seen)/2
		if t.words+grow > t.limit {
			if grow = w + 1 - len(p.seen); t.words+grow > t.limit {
				t.slide(p, s.seq)
				off = s.seq - p.base
				w = int(off / 64)
				if grow = max(w+1-len(p.seen), 0); t.words+grow > t.limit {
					t.foreign++
					return false
				}
			}
		}
		t.words += grow
		p.seen = append(p.seen, make([]uint64, grow)...)
	}
	bit := uint64(1) << (off % 64)
	if p.seen[w]&bit != 0 {
		p.dups++
		return false
	}
	p.seen[w] |= bit
	p.distinct++
	if s.seq+1 < p.next {
		p.reorders++
	} else {
		p.next = s.seq + 1
	}
	return true
}

// slide drops the words of p's bitmap wholly below maxSeqJump under seq (the highest
// sequence number about to be recorded), keeping the array. Caller holds t.mu.
func (t *tracker) slide(p *pubTrack, seq uint64) {
	if seq < maxSeqJump {
		return
	}
	cut := (seq - maxSeqJump) &^ 63
	if cut <= p.base {
		return
	}
	drop := min(int((cut-p.base)/64), len(p.seen))
	n := copy(p.seen, p.seen[drop:])
	clear(p.seen[n:])
	p.seen = p.seen[:n]
	t.words -= drop
	p.base, p.floor = cut, cut
}

func (t *tracker) addForeign() {
	t.mu.Lock()
	t.foreign++
	t.mu.Unlock()
}

// pubLoss is the verdict on one publisher as seen by one receiving side.
type pubLoss struct {
	Run        uint64 `json:"run"`
	Client     uint32 `json:"client"`
	Expected   uint64 `json:"expected"`
	Received   uint64 `json:"received"`
	Lost       uint64 `json:"lost"`
	Duplicates uint64 `json:"duplicates"`
	Reordered  uint64 `json:"reordered"`
}

// verdicts returns one pubLoss per publisher, sorted by run and client. local holds the
// number each publisher of this process sent (known exactly in pubsub; nil otherwise): a
// local publisher that reached nobody is all loss. For other publishers the expected count
// runs from the first sequence seen to the highest, so only gaps count as loss, not a lost
// head or tail.
func (t *tracker) verdicts(local map[pubKey]uint64) []pubLoss {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make(map[pubKey]bool, len(t.pubs)+len(local))
	for k := range t.pubs {
		keys[k] = true
	}
	for k := range local {
		keys[k] = true
	}
	out := make([]pubLoss, 0, len(keys))
	for k := range keys {
		p := t.pubs[k]
		if p == nil {
			p = &pubTrack{}
		}
		exp := p.next - p.low
		if n, ok := local[k]; ok {
			exp = n
		}
		v := pubLoss{Run: k.run, Client: k.client, Expected: exp, Received: p.distinct,
			Duplicates: p.dups, Reordered: p.reorders}
		if exp > p.distinct {
			v.Lost = exp - p.distinct
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b pubLoss) int {
		if c := cmp.Compare(a.Run, b.Run); c != 0 {
			return c
		}
		return cmp.Compare(a.Client, b.Client)
	})
	return out
}
