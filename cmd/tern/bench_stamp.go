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
	seen     []uint64 // bit per sequence number
	distinct uint64
	dups     uint64
	reorders uint64 // arrived after a higher sequence number of the same publisher
	next     uint64 // highest sequence seen + 1
}

// maxTrackedSeq bounds the bitmap a hostile or corrupt sequence number could make us grow
// (2^32 bits = 512 MiB would be too much): beyond it a message counts as foreign.
const maxTrackedSeq = 1 << 30

// tracker counts, per publisher, what one receiving side got: each non-shared subscriber
// has its own; the members of a shared subscription share one, since together they should
// see each message once. Safe for concurrent use.
type tracker struct {
	mu      sync.Mutex
	pubs    map[pubKey]*pubTrack
	foreign uint64 // messages without a bench stamp, or of another run
}

func newTracker() *tracker { return &tracker{pubs: make(map[pubKey]*pubTrack)} }

// add records one message; it returns false for a duplicate.
func (t *tracker) add(s stamp) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.seq >= maxTrackedSeq {
		t.foreign++
		return false
	}
	k := pubKey{s.run, s.client}
	p := t.pubs[k]
	if p == nil {
		p = &pubTrack{}
		t.pubs[k] = p
	}
	w := int(s.seq / 64)
	if w >= len(p.seen) {
		p.seen = append(p.seen, make([]uint64, w+1-len(p.seen)+len(p.seen)/2)...)
	}
	bit := uint64(1) << (s.seq % 64)
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
// is the highest sequence seen + 1, so only gaps count as loss, not a lost tail.
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
		exp := p.next
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
