package filequeue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog"
)

var (
	// ErrLocked is returned by Open when another Queue, in this process or another, has
	// the directory open.
	ErrLocked = errors.New("filequeue: directory in use by another queue")
	// ErrVersion is returned by Open when the directory holds records of a newer format.
	ErrVersion = errors.New("filequeue: unsupported format version")
	// ErrTooLarge is returned by Enqueue for an entry above the record size limit.
	ErrTooLarge = errors.New("filequeue: entry too large")
)

// Queue is a tern.PublisherQueue on disk. See the package documentation.
//
// Lock order: readMu, then metaTok, then mu, then the log's own locks. Nothing blocks on
// I/O under mu; metaTok is held while the manifest is written.
type Queue struct {
	log *seglog.Log
	cfg config
	dir string

	// readMu guards the cursors and the lookahead used by Stats.
	readMu   sync.Mutex
	cursors  [2]*cursor
	tick     uint64 // for least-recently-used cursor choice
	statRead *seglog.Reader

	mu        sync.Mutex
	closed    bool
	last      uint64              // highest sequence number assigned or seen
	lastEntry uint64              // highest sequence number of an entry in the log
	durable   uint64              // entries up to here are as durable as the policy says
	lastAdded seglog.Ticket       // ticket of entry lastEntry, to learn when it is durable
	floor     uint64              // every entry at or below floor is acknowledged or missing
	acked     map[uint64]struct{} // acknowledged entries above floor
	missing   []seqRange          // sequence numbers above floor with no entry, ascending
	segs      []*segSummary       // one per segment holding records, oldest first
	depth     int
	bytes     int64
	removed   uint64 // newest segment ordinal removed
	reserved  uint64 // the manifest's reservation: no sequence number above it is handed out
	trimFloor uint64 // the floor written with the last segment removal
	recent    recentRing
	ahead     []seqTime // enqueue times read ahead from disk for Stats, ascending

	notify chan struct{}
	// metaTok is held (a send) while the manifest's value is written: by reserve, remove
	// and Close, so that each writes what the last one wrote, updated.
	metaTok chan struct{}
	dead    deadStore        // dead letters, in DIR/dead (deadletter.go)
	async   seglog.Committer // EnqueueAsync's entries waiting for their sync (async.go)
}

type seqRange struct{ lo, hi uint64 }

type seqTime struct {
	seq uint64
	t   int64
}

// segSummary is all the queue keeps in memory about a segment: a few dozen bytes plus one
// index point per indexEvery bytes of entries.
type segSummary struct {
	ord uint64
	// last is the sequence number of its last entry; a segment without entries carries the
	// previous segment's over, so last ascends over segs.
	last       uint64
	maxSeq     uint64 // highest sequence number any of its records names, entry or ack
	entries    int
	acked      int
	bytes      int64 // on-disk size of its entries
	ackedBytes int64 // part of bytes already taken off the queue's total
	index      []indexPoint
}

type indexPoint struct {
	seq uint64
	off int64
}

const indexEvery = 64 << 10

// cursor is a reader left where the last Read stopped, so that the drain, which reads
// forward, never scans the same bytes twice.
type cursor struct {
	r    *seglog.Reader
	lo   uint64 // continuing is right for any Read with after >= lo
	used uint64
}

// recentRing remembers the enqueue time of the latest entries, whose sequence numbers are
// consecutive, so Stats finds the oldest one without reading the disk for a short backlog.
type recentRing struct {
	times [1024]int64
	first uint64 // sequence number in times[first%len]; 0 when empty
	n     int
}

func (r *recentRing) push(seq uint64, t int64) {
	if r.n > 0 && seq != r.first+uint64(r.n) {
		r.n = 0 // not consecutive (cannot happen while running): start over
	}
	if r.n == 0 {
		r.first = seq
	}
	r.times[seq%uint64(len(r.times))] = t
	if r.n < len(r.times) {
		r.n++
	} else {
		r.first++
	}
}

func (r *recentRing) get(seq uint64) (int64, bool) {
	if r.n == 0 || seq < r.first || seq >= r.first+uint64(r.n) {
		return 0, false
	}
	return r.times[seq%uint64(len(r.times))], true
}

// Open opens or creates the queue in dir and replays it: memory holds per-segment
// summaries and the out-of-order acknowledgements, never the entries.
func Open(dir string, opts ...Option) (*Queue, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q := &Queue{cfg: cfg, dir: dir, acked: make(map[uint64]struct{}), notify: make(chan struct{}, 1),
		metaTok: make(chan struct{}, 1)}
	var ackAbove uint64 // highest acknowledged sequence number seen in the log
	var newest byte     // highest record version seen
	opt := cfg.LogOptions(formatVersion)
	opt.Manifest = true
	opt.Replay = func(r seglog.Record) error {
		seq, err := q.replay(r)
		ackAbove, newest = max(ackAbove, seq), max(newest, r.Version)
		return err
	}
	log, err := seglog.Open(dir, opt)
	if errors.Is(err, seglog.ErrLocked) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("filequeue: open: %w", err)
	}
	q.log = log
	if err := q.resume(ackAbove, newest); err != nil {
		log.Close()
		return nil, err
	}
	q.durable = q.last
	q.statRead = log.NewReader(seglog.Pos{})
	if through := q.deletableLocked(); through > q.removed {
		if err := q.remove(through, q.floor); err != nil {
			q.statRead.Close()
			log.Close()
			return nil, err
		}
	}
	q.dead = deadStore{dir: deadDir(dir), cfg: cfg}
	if err := q.dead.open(false); err != nil {
		log.Close()
		return nil, err
	}
	q.startCommitter()
	return q, nil
}

// replay applies one record found at Open. It returns the sequence number of an
// acknowledgement, to keep sequence numbers above it.
func (q *Queue) replay(r seglog.Record) (uint64, error) {
	if r.Version > formatVersion {
		return 0, fmt.Errorf("%w: version %d at %v; this code reads up to %d", ErrVersion, r.Version, r.Pos, formatVersion)
	}
	switch r.Type {
	case typeEntry:
		if err := decodeEntry(r.Payload, nil); err != nil {
			q.reportAtOpen(r.Pos, "malformed entry skipped")
			return 0, nil
		}
		seq, _, _ := entryHead(r.Payload)
		if seq <= q.last {
			q.reportAtOpen(r.Pos, fmt.Sprintf("entry %d out of order skipped", seq))
			return 0, nil
		}
		q.addEntryLocked(seq, r.Pos, r.Size)
	case typeAck:
		if len(r.Payload) != ackPayload {
			q.reportAtOpen(r.Pos, "malformed acknowledgement skipped")
			return 0, nil
		}
		seq := binary.LittleEndian.Uint64(r.Payload)
		s := q.summaryLocked(r.Pos.Seg)
		s.maxSeq = max(s.maxSeq, seq)
		if q.pendingLocked(seq) {
			q.ackLocked(seq)
		}
		return seq, nil
	default:
		q.reportAtOpen(r.Pos, fmt.Sprintf("unknown record type %d skipped", r.Type))
	}
	return 0, nil
}

// reportAtOpen reports a record the checksum accepts but this code cannot use.
func (q *Queue) reportAtOpen(pos seglog.Pos, reason string) {
	q.report(Corruption{Segment: pos.Seg, Path: seglog.SegmentPath(q.dir, pos.Seg), Offset: pos.Off,
		Reason: reason})
}

func (q *Queue) report(c Corruption) {
	if q.cfg.OnCorruption != nil {
		q.cfg.OnCorruption(c)
	}
}

// summaryLocked returns the summary of segment ord, adding it after the others if new.
func (q *Queue) summaryLocked(ord uint64) *segSummary {
	if n := len(q.segs); n > 0 && q.segs[n-1].ord == ord {
		return q.segs[n-1]
	}
	s := &segSummary{ord: ord, last: q.lastEntry}
	q.segs = append(q.segs, s)
	return s
}

// addEntryLocked accounts for a new entry, the highest so far.
func (q *Queue) addEntryLocked(seq uint64, pos seglog.Pos, size int64) {
	if seq > q.last+1 {
		q.missing = append(q.missing, seqRange{q.last + 1, seq - 1})
	}
	q.last, q.lastEntry = seq, seq
	s := q.summaryLocked(pos.Seg)
	if n := len(s.index); n == 0 || pos.Off-s.index[n-1].off >= indexEvery {
		s.index = append(s.index, indexPoint{seq: seq, off: pos.Off})
	}
	s.last, s.maxSeq = seq, seq
	s.entries++
	s.bytes += size
	q.depth++
	q.bytes += size
	q.advanceFloorLocked() // moves over a gap below the first entry
}

// pendingLocked reports whether seq is an entry not yet acknowledged.
func (q *Queue) pendingLocked(seq uint64) bool {
	if seq <= q.floor || seq > q.lastEntry {
		return false
	}
	if _, ok := q.acked[seq]; ok {
		return false
	}
	for _, m := range q.missing {
		if seq >= m.lo && seq <= m.hi {
			return false
		}
	}
	return true
}

func (q *Queue) ackLocked(seq uint64) {
	q.acked[seq] = struct{}{}
	q.depth--
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].last >= seq })
	if i < len(q.segs) {
		s := q.segs[i]
		s.acked++
		share := s.bytes / int64(s.entries)
		if s.acked == s.entries {
			share = s.bytes - s.ackedBytes
		}
		s.ackedBytes += share
		q.bytes -= share
	}
	q.advanceFloorLocked()
}

func (q *Queue) advanceFloorLocked() {
	for {
		next := q.floor + 1
		if _, ok := q.acked[next]; ok {
			delete(q.acked, next)
			q.floor = next
			continue
		}
		if len(q.missing) > 0 && q.missing[0].lo <= next {
			q.floor = max(q.floor, q.missing[0].hi)
			q.missing = q.missing[1:]
			continue
		}
		return
	}
}

// deletableLocked returns the newest segment that may go: it and every older one hold no
// unacknowledged entry, and a newer segment names the highest sequence number (in an entry
// or an acknowledgement), so that numbering goes on from there after a restart.
func (q *Queue) deletableLocked() uint64 {
	keep := len(q.segs) - 1
	for keep > 0 && q.segs[keep].maxSeq != q.last {
		keep--
	}
	var through uint64
	for _, s := range q.segs[:max(keep, 0)] {
		if s.entries > 0 && s.last > q.floor {
			break
		}
		through = s.ord
	}
	return through
}

// remove deletes segments through ord, where every entry up to floor is acknowledged, and
// forgets their summaries. The manifest records the removal, with floor, first. Not under
// mu.
func (q *Queue) remove(ord, floor uint64) error {
	q.metaTok <- struct{}{}
	q.mu.Lock()
	q.trimFloor = max(q.trimFloor, floor)
	h := hwm{reserved: q.reserved, floor: q.trimFloor}
	q.mu.Unlock()
	done, err := q.log.RemoveThrough(ord, h.encode())
	<-q.metaTok
	q.mu.Lock()
	if done > q.removed {
		q.removed = done
	}
	for len(q.segs) > 0 && q.segs[0].ord <= done {
		q.segs[0] = nil
		q.segs = q.segs[1:]
	}
	q.mu.Unlock()
	if err != nil {
		return fmt.Errorf("filequeue: delete acknowledged segments: %w", err)
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Enqueue implements tern.PublisherQueue: it stores e, assigning e.Seq and e.Time, and
// returns once the entry is as durable as the sync policy says. Many goroutines may call it
// at once; under SyncEveryWrite they share fsyncs. A ctx error or an I/O error says nothing
// about the entry: it may still be stored. After an I/O error the queue refuses everything
// until it is closed and opened again. EnqueueAsync lets one goroutine share fsyncs too.
func (q *Queue) Enqueue(ctx context.Context, e *tern.QueueEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	seq, now, t, extend, err := q.add(e, nil)
	if err != nil {
		return err
	}
	// Until both are done the entry is neither read nor counted (durable is below it).
	if err := q.log.Wait(ctx, t, true); err != nil {
		return fmt.Errorf("filequeue: enqueue: %w", err)
	}
	if extend {
		if err := q.reserve(ctx, seq); err != nil {
			return fmt.Errorf("filequeue: enqueue: %w", err)
		}
	}
	q.markDurable(seq)
	e.Seq, e.Time = seq, now
	return nil
}

// add encodes e and appends its record to the log's pending batch, under mu so that
// sequence numbers and log order agree. With done set, the entry joins the committer's
// list (async.go) in the same step, so that list stays in sequence order. extend says the
// reservation must be renewed before the entry counts as durable.
func (q *Queue) add(e *tern.QueueEntry, done func(error)) (seq uint64, now time.Time, t seglog.Ticket,
	extend bool, err error) {
	bp := bufPool.Get().(*[]byte)
	buf := encodeEntry((*bp)[:0], &e.Message)
	defer func() {
		if cap(buf) <= 64<<10 {
			*bp = buf[:0]
			bufPool.Put(bp)
		}
	}()
	now = time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, now, t, false, tern.ErrQueueClosed
	}
	seq = q.last + 1
	patchEntry(buf, seq, now)
	t, err = q.log.Add(typeEntry, buf)
	if err != nil {
		if errors.Is(err, seglog.ErrTooLarge) {
			return 0, now, t, false, ErrTooLarge
		}
		return 0, now, t, false, fmt.Errorf("filequeue: enqueue: %w", err)
	}
	q.addEntryLocked(seq, t.Pos, t.Size)
	q.lastAdded = t
	q.recent.push(seq, now.UnixNano())
	if done != nil {
		e.Seq, e.Time = seq, now // before done can run, so it may read them
		q.async.ListLocked(seglog.Pending{T: t, Seq: seq, Done: done})
	}
	return seq, now, t, seq+reserveAhead/2 > q.reserved, nil
}

// markDurable lets Read and Stats see every entry up to seq, and tells the drain.
func (q *Queue) markDurable(seq uint64) {
	q.mu.Lock()
	q.durable = max(q.durable, seq)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Ack implements tern.PublisherQueue. The acknowledgement is written to the operating
// system before Ack returns, so it survives a crash of the process; it reaches the disk
// with the next fsync. Acknowledging an unknown or acknowledged entry is harmless. A
// segment file is deleted once it and every older one hold no unacknowledged entry.
// AckBatch does the same for many entries at the cost of one.
func (q *Queue) Ack(seq uint64) error {
	return q.AckBatch([]uint64{seq})
}

// AckBatch implements tern.BatchAcker: it acknowledges every entry in seqs as Ack does, with
// one write of all their records (and at most one segment removal) instead of one each.
func (q *Queue) AckBatch(seqs []uint64) error {
	var payload [ackPayload]byte
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return tern.ErrQueueClosed
	}
	q.refreshDurableLocked()
	var last seglog.Ticket
	for _, seq := range seqs {
		if seq > q.durable || !q.pendingLocked(seq) {
			continue // unknown: not stored, or its Enqueue has not returned
		}
		binary.LittleEndian.PutUint64(payload[:], seq)
		t, err := q.log.Add(typeAck, payload[:])
		if err != nil {
			q.mu.Unlock()
			return fmt.Errorf("filequeue: ack: %w", err)
		}
		s := q.summaryLocked(t.Pos.Seg)
		s.maxSeq = max(s.maxSeq, seq)
		q.ackLocked(seq)
		last = t
	}
	if last.Size == 0 {
		q.mu.Unlock()
		return nil
	}
	through, floor := q.deletableLocked(), q.floor
	if through <= q.removed {
		through = 0
	}
	q.mu.Unlock()
	if err := q.log.Wait(context.Background(), last, false); err != nil {
		return fmt.Errorf("filequeue: ack: %w", err)
	}
	if through > 0 {
		return q.remove(through, floor)
	}
	return nil
}

// Notify implements tern.PublisherQueue: the channel receives a value after Enqueue.
func (q *Queue) Notify() <-chan struct{} { return q.notify }

// refreshDurableLocked covers an Enqueue that gave up waiting (ctx) although its entry
// went on to become durable. Nothing above the reservation counts: its Enqueue has not
// returned.
func (q *Queue) refreshDurableLocked() {
	if q.durable < q.lastEntry && q.log.Done(q.lastAdded, true) {
		q.durable = max(q.durable, min(q.lastEntry, q.reserved))
	}
}

// unconfirmedLocked returns how many entries were added but are not durable: their
// Enqueue is running, or failed. Added entries above durable are consecutive, and Ack
// ignores them, so the count is exact.
func (q *Queue) unconfirmedLocked() int {
	q.refreshDurableLocked()
	if q.lastEntry <= q.durable {
		return 0
	}
	return int(q.lastEntry - q.durable)
}

// Read implements tern.PublisherQueue. It streams from disk through a cursor that stays
// where the previous Read stopped, so the drain reading forward never rereads; a Read from
// elsewhere seeks with the per-segment index, reading at most indexEvery bytes to get there.
// Entries not yet durable are not returned.
func (q *Queue) Read(after uint64, n int, dst []tern.QueueEntry) ([]tern.QueueEntry, error) {
	if n <= 0 {
		return dst, nil
	}
	q.readMu.Lock()
	defer q.readMu.Unlock()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return dst, tern.ErrQueueClosed
	}
	q.refreshDurableLocked()
	start, limit := max(after, q.floor), q.durable
	if start >= limit {
		q.mu.Unlock()
		return dst, nil
	}
	target := q.seekLocked(start)
	q.mu.Unlock()

	c := q.cursorFor(start, target)
	c.lo = max(c.lo, start) // entries up to start are skipped below, whatever their state
	for n > 0 {
		rec, err := c.r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return dst, fmt.Errorf("filequeue: read: %w", err)
		}
		if rec.Type != typeEntry {
			continue
		}
		seq, _, ok := entryHead(rec.Payload)
		if !ok {
			continue // reported at Open
		}
		if seq > limit {
			c.r.Seek(rec.Pos) // not durable yet: the next Read starts here
			break
		}
		if seq <= start || !q.isPending(seq) {
			continue
		}
		var e tern.QueueEntry
		if decodeEntry(rec.Payload, &e) != nil {
			continue // reported at Open
		}
		dst = append(dst, e)
		c.lo = seq
		n--
	}
	return dst, nil
}

func (q *Queue) isPending(seq uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pendingLocked(seq)
}

// seekLocked returns a record boundary at or before the first entry above start.
func (q *Queue) seekLocked(start uint64) seglog.Pos {
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].last > start })
	if i == len(q.segs) {
		if n := len(q.segs); n > 0 {
			return seglog.Pos{Seg: q.segs[n-1].ord}
		}
		return seglog.Pos{}
	}
	s := q.segs[i]
	j := sort.Search(len(s.index), func(j int) bool { return s.index[j].seq > start+1 })
	if j == 0 {
		return seglog.Pos{Seg: s.ord}
	}
	return seglog.Pos{Seg: s.ord, Off: s.index[j-1].off}
}

func before(a, b seglog.Pos) bool { return a.Seg < b.Seg || a.Seg == b.Seg && a.Off < b.Off }

// cursorFor returns a cursor positioned to read entries above start: one that may go on
// from where it stopped, moved forward to target when that skips much; or else the least
// recently used one, moved to target.
func (q *Queue) cursorFor(start uint64, target seglog.Pos) *cursor {
	q.tick++
	var best *cursor
	for _, c := range q.cursors {
		if c != nil && c.lo <= start && (best == nil || c.lo > best.lo) {
			best = c
		}
	}
	if best != nil {
		p := best.r.Pos()
		if before(p, target) && (p.Seg != target.Seg || target.Off-p.Off > indexEvery) {
			best.r.Seek(target)
		}
		best.used = q.tick
		return best
	}
	slot := 0
	for i, c := range q.cursors {
		if c == nil {
			slot = i
			break
		}
		if c.used < q.cursors[slot].used {
			slot = i
		}
	}
	c := q.cursors[slot]
	if c == nil {
		c = &cursor{r: q.log.NewReader(target)}
		q.cursors[slot] = c
	}
	c.r.Seek(target)
	c.lo, c.used = start, q.tick
	return c
}

// Stats implements tern.PublisherQueue. Depth is exact: it counts the entries whose Enqueue
// succeeded (or gave up on its ctx while the entry went on to become durable), not yet
// acknowledged; Bytes is the on-disk size of the unacknowledged entries, estimated per
// segment; Oldest is the enqueue time of the oldest unacknowledged entry, found in memory
// for recent entries and otherwise read from disk (a window of entries at a time, so a
// drain acknowledging in order rarely reads).
func (q *Queue) Stats() tern.QueueStats {
	q.mu.Lock()
	st := tern.QueueStats{Depth: q.depth - q.unconfirmedLocked(), Bytes: q.bytes}
	if st.Depth <= 0 {
		q.mu.Unlock()
		return tern.QueueStats{}
	}
	oldest := q.floor + 1 // not acknowledged and not missing, by the floor's definition
	t, ok := q.timeLocked(oldest)
	q.mu.Unlock()
	if !ok {
		t, ok = q.readTimes(oldest)
	}
	if ok {
		st.Oldest = time.Unix(0, t)
	}
	return st
}

func (q *Queue) timeLocked(seq uint64) (int64, bool) {
	if t, ok := q.recent.get(seq); ok {
		return t, true
	}
	i := sort.Search(len(q.ahead), func(i int) bool { return q.ahead[i].seq >= seq })
	if i < len(q.ahead) && q.ahead[i].seq == seq {
		return q.ahead[i].t, true
	}
	return 0, false
}

const aheadMax = 512

// readTimes reads the enqueue times of entries from seq on into q.ahead.
func (q *Queue) readTimes(seq uint64) (int64, bool) {
	q.readMu.Lock()
	defer q.readMu.Unlock()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, false
	}
	q.statRead.Seek(q.seekLocked(seq - 1))
	q.mu.Unlock()
	ahead := make([]seqTime, 0, aheadMax)
	for len(ahead) < aheadMax {
		rec, err := q.statRead.Next()
		if err != nil {
			break
		}
		if rec.Type != typeEntry {
			continue
		}
		s, t, ok := entryHead(rec.Payload)
		if ok && s >= seq {
			ahead = append(ahead, seqTime{s, t})
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ahead = ahead
	return q.timeLocked(seq)
}

// Close implements tern.PublisherQueue: it writes and syncs what was enqueued, closes the
// files and releases the directory. Entries stay stored for the next Open.
func (q *Queue) Close() error {
	q.readMu.Lock()
	defer q.readMu.Unlock()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return tern.ErrQueueClosed
	}
	q.closed = true
	q.mu.Unlock()
	q.async.Stop() // settles what EnqueueAsync added before closed was set
	for _, c := range q.cursors {
		if c != nil {
			c.r.Close()
		}
	}
	q.statRead.Close()
	merr := q.settleReservation()
	derr := q.dead.close()
	if err := q.log.Close(); err != nil {
		return fmt.Errorf("filequeue: close: %w", err)
	}
	if merr != nil {
		return fmt.Errorf("filequeue: close: %w", merr)
	}
	return derr
}

// Compile-time check.
var _ tern.PublisherQueue = (*Queue)(nil)
