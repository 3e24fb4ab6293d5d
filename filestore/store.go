package filestore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog"
)

var (
	// ErrClosed is returned by a Store used after Close.
	ErrClosed = errors.New("filestore: closed")
	// ErrLocked is returned by Open when another Store, in this process or another, has
	// the directory open.
	ErrLocked = errors.New("filestore: directory in use by another store")
	// ErrVersion is returned by Open when the directory holds records of a newer format.
	ErrVersion = errors.New("filestore: unsupported format version")
	// ErrKind is returned by Put for a record of no known kind.
	ErrKind = errors.New("filestore: unknown record kind")
)

// Store is a tern.Store on disk. See the package documentation.
//
// Lock order: compactMu, then mu, then the log's own lock. Nothing blocks on I/O under mu,
// so Delete, which the client may call under its own lock, never waits for the disk.
type Store struct {
	log *seglog.Log
	cfg config
	dir string

	// compactMu keeps Load and compaction apart: compaction moves records.
	compactMu sync.Mutex

	mu         sync.Mutex
	closed     bool
	out, in    map[uint16]*entry // live records by packet id: outbound space, inbound space
	live       int64             // on-disk bytes of the live records
	total      int64             // on-disk bytes of the log
	compacting bool              // a compaction is requested or running

	kick chan struct{}
	quit chan struct{}
	done chan struct{}

	async seglog.Committer // PutAsync (async.go)
}

// entry is what memory holds per live record: where it is, not what it says.
type entry struct {
	kind tern.RecordKind
	id   uint16
	seq  uint64
	time int64 // Unix ns
	pos  seglog.Pos
	size int64
}

func isOutbound(k tern.RecordKind) bool { return k == tern.RecordPublish || k == tern.RecordReleased }

func (s *Store) table(k tern.RecordKind) map[uint16]*entry {
	if isOutbound(k) {
		return s.out
	}
	return s.in
}

// Open opens or creates the store in dir, replays it, and, with WithTTL, purges expired
// records. Memory holds an index entry per live record (kind, id, seq, time, position),
// never the packets.
func Open(dir string, opts ...Option) (*Store, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{
		cfg: cfg, dir: dir,
		out: make(map[uint16]*entry), in: make(map[uint16]*entry),
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	opt := cfg.LogOptions(formatVersion)
	opt.Replay = s.replay
	log, err := seglog.Open(dir, opt)
	if errors.Is(err, seglog.ErrLocked) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("filestore: open: %w", err)
	}
	s.log = log
	for _, seg := range log.Segments() {
		s.total += seg.Size
	}
	if cfg.ttl > 0 {
		s.purge()
	}
	s.mu.Lock()
	s.maybeCompactLocked()
	s.mu.Unlock()
	s.startCommitter()
	go s.maintain()
	return s, nil
}

func (s *Store) report(pos seglog.Pos, reason string) {
	if s.cfg.OnCorruption != nil {
		s.cfg.OnCorruption(Corruption{Segment: pos.Seg, Path: seglog.SegmentPath(s.dir, pos.Seg),
			Offset: pos.Off, Reason: reason})
	}
}

// replay applies one record found at Open.
func (s *Store) replay(r seglog.Record) error {
	if r.Version > formatVersion {
		return fmt.Errorf("%w: version %d at %v; this code reads up to %d", ErrVersion, r.Version, r.Pos, formatVersion)
	}
	switch r.Type {
	case typePut:
		p, err := decodePut(r.Payload)
		if err != nil {
			s.report(r.Pos, "malformed put skipped")
			return nil
		}
		s.setLocked(&entry{kind: p.kind, id: p.id, seq: p.seq, time: p.time, pos: r.Pos, size: r.Size})
	case typeDelete:
		kind, id, err := decodeDelete(r.Payload)
		if err != nil {
			s.report(r.Pos, "malformed delete skipped")
			return nil
		}
		s.dropLocked(kind, id)
	case typeReset:
		s.resetLocked()
	default:
		s.report(r.Pos, fmt.Sprintf("unknown record type %d skipped", r.Type))
	}
	return nil
}

func (s *Store) setLocked(e *entry) {
	t := s.table(e.kind)
	if old, ok := t[e.id]; ok {
		s.live -= old.size
	}
	t[e.id] = e
	s.live += e.size
}

func (s *Store) dropLocked(kind tern.RecordKind, id uint16) bool {
	t := s.table(kind)
	old, ok := t[id]
	if ok {
		delete(t, id)
		s.live -= old.size
	}
	return ok
}

func (s *Store) resetLocked() {
	for id, e := range s.out {
		if e.kind != tern.RecordPublish {
			delete(s.out, id)
			s.live -= e.size
		}
	}
	for id, e := range s.in {
		delete(s.in, id)
		s.live -= e.size
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Put implements tern.Store: it returns once the record is as durable as the sync policy
// says; concurrent Puts share one write and one fsync. A RecordReleased replacing a
// RecordPublish keeps the publish's Seq and Time. A zero Time is stamped with the current
// time, so WithTTL can age the record. After an I/O error every call fails until the store
// is closed and opened again.
func (s *Store) Put(r tern.StoreRecord) error {
	t, err := s.add(r, nil)
	if err != nil {
		return err
	}
	if err := s.log.Wait(context.Background(), t, true); err != nil {
		return fmt.Errorf("filestore: put: %w", err)
	}
	return nil
}

// add appends r to the log and the index; added, when set, runs under mu with the record's
// ticket, so whatever it records keeps the log's order.
func (s *Store) add(r tern.StoreRecord, added func(seglog.Ticket)) (seglog.Ticket, error) {
	if !validKind(r.Kind) {
		return seglog.Ticket{}, ErrKind
	}
	now := s.cfg.now()
	bp := bufPool.Get().(*[]byte)
	buf := appendPut((*bp)[:0], &put{kind: r.Kind, id: r.ID, packet: r.Packet})
	seq, stamp := r.Seq, r.Time.UnixNano()
	if r.Time.IsZero() {
		stamp = now.UnixNano()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		putBuf(bp, buf)
		return seglog.Ticket{}, ErrClosed
	}
	if old, ok := s.out[r.ID]; ok && r.Kind == tern.RecordReleased && old.kind == tern.RecordPublish {
		seq, stamp = old.seq, old.time
	}
	patchPut(buf, seq, stamp)
	t, err := s.log.Add(typePut, buf)
	putBuf(bp, buf)
	if err != nil {
		return seglog.Ticket{}, fmt.Errorf("filestore: put: %w", err)
	}
	s.setLocked(&entry{kind: r.Kind, id: r.ID, seq: seq, time: stamp, pos: t.Pos, size: t.Size})
	s.total += t.Size
	s.maybeCompactLocked()
	if added != nil {
		added(t)
	}
	return t, nil
}

func putBuf(bp *[]byte, buf []byte) {
	if cap(buf) <= 64<<10 {
		*bp = buf[:0]
		bufPool.Put(bp)
	}
}

// Delete implements tern.Store. It appends a tombstone and returns without waiting for
// the disk (the client may hold its own lock): the tombstone is written by the log's
// goroutine right after and synced with the next fsync. A deletion lost in a crash brings
// back a record the contract says is harmless to resend.
func (s *Store) Delete(kind tern.RecordKind, id uint16) error {
	var buf [deleteSize]byte
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if _, ok := s.table(kind)[id]; !ok {
		s.mu.Unlock()
		return nil
	}
	t, err := s.log.Add(typeDelete, appendDelete(buf[:0], kind, id))
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("filestore: delete: %w", err)
	}
	s.dropLocked(kind, id)
	s.total += t.Size
	s.maybeCompactLocked()
	s.mu.Unlock()
	s.log.Kick()
	return nil
}

// Reset implements tern.Store: it drops the inbound and RecordReleased records and returns
// once that is as durable as the sync policy says.
func (s *Store) Reset() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	t, err := s.log.Add(typeReset, nil)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("filestore: reset: %w", err)
	}
	s.resetLocked()
	s.total += t.Size
	s.maybeCompactLocked()
	s.mu.Unlock()
	if err := s.log.Wait(context.Background(), t, true); err != nil {
		return fmt.Errorf("filestore: reset: %w", err)
	}
	return nil
}

// Load implements tern.Store: every live record, outbound first, each group in Seq order,
// read back from disk.
func (s *Store) Load() ([]tern.StoreRecord, error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	es := make([]entry, 0, len(s.out)+len(s.in))
	for _, t := range []map[uint16]*entry{s.out, s.in} {
		start := len(es)
		for _, e := range t {
			es = append(es, *e)
		}
		slices.SortFunc(es[start:], func(a, b entry) int { return cmp.Compare(a.seq, b.seq) })
	}
	mark := s.log.Mark()
	s.mu.Unlock()
	if err := s.log.Wait(context.Background(), mark, false); err != nil {
		return nil, fmt.Errorf("filestore: load: %w", err)
	}
	r := s.log.NewReader(seglog.Pos{})
	defer r.Close()
	out := make([]tern.StoreRecord, 0, len(es))
	for _, e := range es {
		rec, err := r.ReadAt(e.pos)
		if err != nil {
			return nil, fmt.Errorf("filestore: load: %w", err)
		}
		p, err := decodePut(rec.Payload)
		if err != nil {
			return nil, fmt.Errorf("filestore: load %v: %w", e.pos, err)
		}
		var pkt []byte
		if len(p.packet) > 0 {
			pkt = append([]byte(nil), p.packet...)
		}
		out = append(out, tern.StoreRecord{Kind: e.kind, ID: e.id, Seq: e.seq, Packet: pkt, Time: time.Unix(0, e.time)})
	}
	return out, nil
}

// Close implements tern.Store: it stops the background goroutine, writes and syncs what
// was stored, and releases the directory.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.mu.Unlock()
	s.async.Stop()
	close(s.quit)
	<-s.done
	if err := s.log.Close(); err != nil {
		return fmt.Errorf("filestore: close: %w", err)
	}
	return nil
}

// maybeCompactLocked asks for a compaction once dead records outweigh live ones and there
// are enough of them to be worth a rewrite.
func (s *Store) maybeCompactLocked() {
	dead := s.total - s.live
	if s.compacting || dead < s.cfg.compactMin || dead <= s.live {
		return
	}
	s.compacting = true
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// maintain is the store's goroutine: compactions on request, TTL purges on a timer.
func (s *Store) maintain() {
	defer close(s.done)
	var tick <-chan time.Time
	if s.cfg.ttl > 0 {
		t := time.NewTicker(s.cfg.purgePeriod())
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-s.quit:
			return
		case <-s.kick:
			if err := s.compact(); err != nil && s.cfg.onError != nil {
				s.cfg.onError(err)
			}
		case <-tick:
			s.purge()
		}
		if s.cfg.onMaintain != nil {
			s.cfg.onMaintain()
		}
	}
}

// purge deletes the records older than the TTL.
func (s *Store) purge() {
	cutoff := s.cfg.now().Add(-s.cfg.ttl).UnixNano()
	var buf [deleteSize]byte
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	purged := false
	for _, t := range []map[uint16]*entry{s.out, s.in} {
		for id, e := range t {
			if e.time >= cutoff {
				continue
			}
			rec, err := s.log.Add(typeDelete, appendDelete(buf[:0], e.kind, id))
			if err != nil {
				if s.cfg.onError != nil {
					s.cfg.onError(fmt.Errorf("filestore: purge: %w", err))
				}
				return
			}
			s.dropLocked(e.kind, id)
			s.total += rec.Size
			purged = true
		}
	}
	if purged {
		s.maybeCompactLocked()
		s.log.Kick()
	}
}

// compact rewrites the live records of every sealed segment into one new segment and
// deletes the old files (see seglog.Log.Compact for the crash-safe sequence). Puts and
// Deletes go on meanwhile: they land in newer segments, which compaction leaves alone.
func (s *Store) compact() error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	defer func() {
		s.mu.Lock()
		s.compacting = false
		s.mu.Unlock()
	}()
	ord, err := s.log.Seal(context.Background())
	if err != nil || ord == 0 {
		return err
	}
	s.mu.Lock()
	var snap []entry
	for _, t := range []map[uint16]*entry{s.out, s.in} {
		for _, e := range t {
			if e.pos.Seg <= ord {
				snap = append(snap, *e)
			}
		}
	}
	s.mu.Unlock()
	slices.SortFunc(snap, func(a, b entry) int { return cmp.Compare(a.seq, b.seq) })

	r := s.log.NewReader(seglog.Pos{})
	defer r.Close()
	moved := make([]seglog.Pos, len(snap))
	var buf []byte
	err = s.log.Compact(ord, func(add func(byte, []byte) (seglog.Pos, error)) error {
		for i, e := range snap {
			rec, err := r.ReadAt(e.pos)
			if err != nil {
				return err
			}
			p, err := decodePut(rec.Payload)
			if err != nil {
				return fmt.Errorf("record at %v: %w", e.pos, err)
			}
			// Re-encoded, not copied: a compaction also upgrades old format versions.
			buf = appendPut(buf[:0], &p)
			if moved[i], err = add(typePut, buf); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("filestore: compact: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range snap {
		// A record replaced or deleted meanwhile has moved on by itself.
		if cur, ok := s.table(e.kind)[e.id]; ok && cur.pos == e.pos {
			cur.pos = moved[i]
		}
	}
	s.total = 0
	for _, seg := range s.log.Segments() {
		s.total += seg.Size
	}
	return nil
}

// Compile-time check.
var _ tern.Store = (*Store)(nil)
