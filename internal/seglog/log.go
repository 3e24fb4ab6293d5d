// Package seglog is an append-only log of segment files, the storage under filequeue and
// filestore.
//
// A directory holds segment files named by their ordinal, 20 decimal digits and ".seg"
// (00000000000000000001.seg, ...), a LOCK file, and with Options.Manifest a MANIFEST file
// (manifest.go); subdirectories are never looked into. Records are appended to the newest
// segment until it reaches the size limit; then a new one starts. See record.go for the
// record layout. Open scans every segment, cuts a torn tail off the last one, skips and
// reports corrupt bytes anywhere else, and replays every intact record to the caller.
//
// Appends use group commit: Add puts a record in a shared pending batch (cheap, under the
// caller's own lock if it needs ordering), Wait blocks until it is written and, under
// SyncEvery, covered by an fsync. Whichever waiter finds no write in progress writes the
// whole batch; whichever finds its record written and no sync in progress syncs. So many
// concurrent appenders share one write and one fsync, and a write can proceed while an
// fsync runs. Any failed write or sync fails the log for good: nothing after it is
// reported durable, and the log must be reopened, since a failed fsync leaves the page
// cache in an unknown state.
package seglog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// SyncMode says when appended records are fsynced.
type SyncMode uint8

const (
	// SyncEvery: Wait on a durable record returns only after an fsync covering it.
	SyncEvery SyncMode = iota
	// SyncPeriodic: Wait returns once the record is written; a background goroutine syncs
	// every Interval. A crash of the machine (not of the process) loses up to Interval.
	SyncPeriodic
	// SyncNever: Wait returns once written; the operating system decides when data
	// reaches the disk. Close still syncs.
	SyncNever
)

// SyncPolicy is a SyncMode with its interval.
type SyncPolicy struct {
	Mode     SyncMode
	Interval time.Duration // for SyncPeriodic
}

func (p SyncPolicy) String() string {
	switch p.Mode {
	case SyncEvery:
		return "every-write"
	case SyncPeriodic:
		return fmt.Sprintf("interval(%v)", p.Interval)
	default:
		return "none"
	}
}

// Options configure Open.
type Options struct {
	FS          FS    // default OSFS()
	SegmentSize int64 // a segment is rolled once the next record would pass it; default 16 MiB
	MaxRecord   int64 // largest len field accepted; default 256 MiB + 64 KiB
	Sync        SyncPolicy
	// Version is the record format version this code writes, at least 1. Records of other
	// versions are still read and passed to Replay, which decides what to do with them.
	Version byte
	// OnCorruption is told about unreadable bytes and missing segments, at Open and while
	// reading later. It runs on the goroutine that found them and must not call the Log.
	OnCorruption func(Corruption)
	// Replay receives every intact record in log order during Open; an error fails Open.
	Replay func(Record) error
	// Manifest keeps a file, MANIFEST, naming the first segment not removed and the newest
	// created, plus a value of the caller's (SetMeta, Meta). Open then reports segments
	// missing at the front or the end of the log, which gaps in the numbering cannot show.
	// Cost: the file is replaced (write, fsync, rename, directory fsync; no syncs under
	// SyncNever) once per segment created, per RemoveThrough that removes something, and
	// per SetMeta. Default off.
	Manifest bool
}

const (
	defaultSegmentSize = 16 << 20
	defaultMaxRecord   = 256<<20 + 64<<10
	segSuffix          = ".seg"
	tmpSuffix          = ".tmp"
	lockName           = "LOCK"
)

var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("seglog: closed")
	// ErrFailed wraps the write or sync error that failed the log; reopen it.
	ErrFailed = errors.New("seglog: log failed, reopen it")
	// ErrTooLarge is returned for a record above MaxRecord.
	ErrTooLarge = errors.New("seglog: record too large")
)

// Ticket identifies an added record until it is durable.
type Ticket struct {
	Pos  Pos   // where the record starts
	Size int64 // its size on disk
	end  uint64
}

type segment struct {
	ord     uint64
	size    int64 // bytes appended, pending ones included
	written int64 // bytes in the file
	sealed  bool  // a newer segment exists: nothing more is appended here
	f       File  // write handle, owned by the writer
	// closeAfterSync: the writer is done with f but a sync is using it.
	closeAfterSync bool
	bad            []badRegion // unreadable regions already reported, skipped by readers
}

type chunk struct {
	seg *segment
	buf []byte
}

// Log is an open segment log. Its methods are safe for concurrent use.
type Log struct {
	dir  string
	fs   FS
	opt  Options
	lock io.Closer

	mu      sync.Mutex
	cond    sync.Cond
	segs    []*segment // ascending ordinals; the last one takes appends
	pending []chunk    // added, not yet written, in log order
	spare   []chunk    // the other pending slice, swapped in by the writer
	free    [][]byte   // recycled chunk buffers
	// Logical byte counters over the whole log since Open: appended >= written >= synced.
	appended, written, synced uint64
	writing, syncing          bool
	wantFlush                 bool     // Kick was called: pending records may have no waiter
	wseg                      *segment // segment the writer wrote to last (writer only)
	lastWritten               *segment // segment holding byte written-1
	syncSeg                   *segment // segment being synced
	unsynced                  []uint64 // segments left unsynced under SyncNever, for Close
	err                       error
	closed                    bool

	// The manifest (manifest.go). manMu serialises its replacements and is taken before mu.
	manMu       sync.Mutex
	man         manifest // as last read or written
	meta        []byte   // the caller's value found at Open
	hadManifest bool     // Open found an intact manifest
	gaps        []Span   // segments Open found missing
	ckpt        uint64   // newest checkpoint segment found at Open: older ones are obsolete

	kick chan struct{}
	quit chan struct{}
	done chan struct{}
}

// Open opens or creates the log in dir, replays it, and takes its lock. A directory locked
// by another Log returns an error wrapping ErrLocked.
func Open(dir string, opt Options) (*Log, error) {
	if opt.FS == nil {
		opt.FS = OSFS()
	}
	if opt.SegmentSize <= 0 {
		opt.SegmentSize = defaultSegmentSize
	}
	if opt.MaxRecord <= 0 {
		opt.MaxRecord = defaultMaxRecord
	}
	if opt.MaxRecord > 1<<32-1 {
		return nil, fmt.Errorf("seglog: MaxRecord %d above the 32-bit length field", opt.MaxRecord)
	}
	if opt.Version == 0 {
		return nil, errors.New("seglog: Version must be at least 1")
	}
	if opt.Sync.Mode == SyncPeriodic && opt.Sync.Interval <= 0 {
		return nil, errors.New("seglog: sync interval must be positive")
	}
	if err := opt.FS.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("seglog: create directory: %w", err)
	}
	lk, err := opt.FS.Lock(filepath.Join(dir, lockName))
	if err != nil {
		return nil, err
	}
	l := &Log{
		dir: dir, fs: opt.FS, opt: opt, lock: lk,
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	l.cond.L = &l.mu
	err = l.recover()
	if err == nil {
		err = l.settleManifest()
	}
	if err != nil {
		l.closeFiles()
		lk.Close()
		return nil, err
	}
	go l.background()
	return l, nil
}

func (l *Log) path(ord uint64) string { return SegmentPath(l.dir, ord) }

// SegmentPath returns the file name of segment ord in dir.
func SegmentPath(dir string, ord uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", ord, segSuffix))
}

func (l *Log) report(c Corruption) {
	if l.opt.OnCorruption != nil {
		l.opt.OnCorruption(c)
	}
}

func (l *Log) newScanner() scanner {
	return scanner{maxLen: l.opt.MaxRecord, maxVer: l.opt.Version}
}

func (l *Log) active() *segment { return l.segs[len(l.segs)-1] }

// rollLocked seals the active segment and starts the next. The new segment gets an empty
// chunk so the writer creates its file (and finishes the old one) even if nothing follows.
func (l *Log) rollLocked() *segment {
	old := l.active()
	old.sealed = true
	seg := &segment{ord: old.ord + 1}
	l.segs = append(l.segs, seg)
	l.pending = append(l.pending, chunk{seg: seg, buf: l.getBuf()})
	return seg
}

func (l *Log) getBuf() []byte {
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free = l.free[:n-1]
		return b[:0]
	}
	return nil
}

// Add appends a record to the pending batch and returns at once; Wait makes it durable.
// Records are ordered as Add is called, so callers that need an order between records and
// their own state call Add under their own lock. A caller that will not Wait calls Kick.
// Types from TypeReserved up are the log's own. The payload is copied.
func (l *Log) Add(typ byte, payload []byte) (Ticket, error) {
	if typ >= TypeReserved {
		return Ticket{}, fmt.Errorf("seglog: record type %#x is reserved", typ)
	}
	if int64(minLen+len(payload)) > l.opt.MaxRecord {
		return Ticket{}, ErrTooLarge
	}
	size := int64(RecordSize(len(payload)))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Ticket{}, ErrClosed
	}
	if l.err != nil {
		return Ticket{}, l.err
	}
	seg := l.active()
	if seg.size > 0 && seg.size+size > l.opt.SegmentSize {
		seg = l.rollLocked()
	}
	if n := len(l.pending); n == 0 || l.pending[n-1].seg != seg {
		l.pending = append(l.pending, chunk{seg: seg, buf: l.getBuf()})
	}
	c := &l.pending[len(l.pending)-1]
	c.buf = appendRecord(c.buf, l.opt.Version, typ, payload)
	t := Ticket{Pos: Pos{Seg: seg.ord, Off: seg.size}, Size: size}
	seg.size += size
	l.appended += uint64(size)
	t.end = l.appended
	return t, nil
}

// Mark returns a ticket covering everything added so far, to Wait for it.
func (l *Log) Mark() Ticket {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Ticket{end: l.appended}
}

// Kick asks the background goroutine to write pending records, for callers that Add
// without waiting (a deletion that need not be durable must not block on I/O).
func (l *Log) Kick() {
	l.mu.Lock()
	l.wantFlush = true
	l.mu.Unlock()
	l.signal()
}

func (l *Log) signal() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Done reports whether Wait(t, durable) would return at once without error.
func (l *Log) Done(t Ticket, durable bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if durable && l.opt.Sync.Mode == SyncEvery {
		return l.synced >= t.end
	}
	return l.written >= t.end
}

// Wait blocks until t is written, and when durable under SyncEvery also synced. A ctx
// error says nothing about the record: it may still become durable.
func (l *Log) Wait(ctx context.Context, t Ticket, durable bool) error {
	needSync := durable && l.opt.Sync.Mode == SyncEvery
	l.mu.Lock()
	defer l.mu.Unlock()
	registered := false
	for {
		if needSync && l.synced >= t.end || !needSync && l.written >= t.end {
			return nil
		}
		if l.err != nil {
			return l.err
		}
		if err := ctx.Err(); err != nil {
			l.wantFlush = true // the record may have nobody left to write it
			l.signal()
			return err
		}
		if l.written < t.end {
			// While an fsync runs, durable records wait for it and then go out in one
			// write and one fsync; others are written at once.
			if !l.writing && !(needSync && l.syncing) {
				l.writeRoundLocked()
				continue
			}
		} else if !l.syncing {
			l.syncRoundLocked()
			continue
		}
		if !registered && ctx.Done() != nil {
			registered = true
			stop := context.AfterFunc(ctx, func() {
				l.mu.Lock()
				l.cond.Broadcast()
				l.mu.Unlock()
			})
			defer stop()
		}
		l.cond.Wait()
	}
}

// fail records the first I/O failure; every later Add and unfinished Wait returns it.
func (l *Log) failLocked(err error) {
	if l.err == nil {
		l.err = fmt.Errorf("%w: %w", ErrFailed, err)
	}
}

// writeRoundLocked takes the writer role and writes every pending chunk. Called and
// returns with l.mu held; releases it during I/O.
func (l *Log) writeRoundLocked() {
	l.writing, l.wantFlush = true, false
	chunks := l.pending
	l.pending, l.spare = l.spare[:0], nil
	l.mu.Unlock()
	var err error
	for i := range chunks {
		if err = l.writeChunk(&chunks[i]); err != nil {
			break
		}
	}
	l.mu.Lock()
	for i := range chunks {
		if b := chunks[i].buf; cap(b) > 0 && cap(b) <= 1<<20 && len(l.free) < 8 {
			l.free = append(l.free, b)
		}
		chunks[i] = chunk{}
	}
	if l.spare == nil {
		l.spare = chunks[:0]
	}
	l.writing = false
	if err != nil {
		l.failLocked(err)
	}
	l.cond.Broadcast()
	if l.wantFlush && len(l.pending) > 0 {
		l.signal() // Kick came during the round: the background goroutine takes over
	}
}

// writeChunk writes one chunk, first finishing the previous segment and creating the
// chunk's own file when the chunk starts a new segment. Writer role only.
func (l *Log) writeChunk(c *chunk) error {
	seg := c.seg
	if l.wseg != nil && l.wseg != seg {
		if err := l.finish(l.wseg); err != nil {
			return err
		}
		l.wseg = nil
	}
	if seg.f == nil {
		f, err := l.fs.OpenFile(l.path(seg.ord), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("create segment: %w", err)
		}
		if l.opt.Sync.Mode != SyncNever {
			// The new name must be durable before anything in it is reported synced.
			if err := l.fs.SyncDir(l.dir); err != nil {
				f.Close()
				return fmt.Errorf("sync directory: %w", err)
			}
		}
		// And the manifest must name it before anything in it is reported written, so
		// that losing the whole file is noticed.
		if err := l.noteCreated(seg.ord); err != nil {
			f.Close()
			return err
		}
		l.mu.Lock()
		seg.f = f
		l.lastWritten = seg
		l.mu.Unlock()
	}
	l.wseg = seg
	if len(c.buf) == 0 {
		return nil
	}
	n, err := seg.f.Write(c.buf)
	l.mu.Lock()
	seg.written += int64(n)
	if err == nil {
		l.written += uint64(n)
		l.lastWritten = seg
	}
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("write segment: %w", err)
	}
	return nil
}

// finish syncs a segment the writer is leaving for good and closes its handle, unless a
// sync is using it, in which case the syncer closes it.
func (l *Log) finish(seg *segment) error {
	if l.opt.Sync.Mode != SyncNever {
		if err := seg.f.Sync(); err != nil {
			return fmt.Errorf("sync segment: %w", err)
		}
	}
	l.mu.Lock()
	if l.opt.Sync.Mode == SyncNever {
		l.unsynced = append(l.unsynced, seg.ord) // Close syncs it
	}
	f := seg.f
	if l.syncing && l.syncSeg == seg {
		seg.closeAfterSync, f = true, nil
	} else {
		seg.f = nil
	}
	l.mu.Unlock()
	if f != nil {
		if err := f.Close(); err != nil {
			return fmt.Errorf("close segment: %w", err)
		}
	}
	return nil
}

// syncRoundLocked takes the syncer role and fsyncs what is written. Called and returns
// with l.mu held. Segments before the last written one were synced when the writer left
// them, so syncing the last one covers every written byte.
func (l *Log) syncRoundLocked() {
	target, seg := l.written, l.lastWritten
	if target <= l.synced || seg == nil {
		return
	}
	l.syncing, l.syncSeg = true, seg
	f := seg.f
	l.mu.Unlock()
	var err error
	if f != nil { // nil: the writer finished (synced) and closed it
		err = f.Sync()
	}
	l.mu.Lock()
	l.syncing, l.syncSeg = false, nil
	if seg.closeAfterSync {
		seg.closeAfterSync = false
		if cerr := seg.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close segment: %w", cerr)
		}
		seg.f = nil
	}
	if err != nil {
		l.failLocked(fmt.Errorf("sync segment: %w", err))
	} else if target > l.synced {
		l.synced = target
	}
	l.cond.Broadcast()
}

// background writes records nobody waits for and, under SyncPeriodic, syncs on the tick.
func (l *Log) background() {
	defer close(l.done)
	var tick <-chan time.Time
	if l.opt.Sync.Mode == SyncPeriodic {
		t := time.NewTicker(l.opt.Sync.Interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-l.quit:
			return
		case <-l.kick:
			l.mu.Lock()
			if !l.writing && len(l.pending) > 0 && l.err == nil {
				l.writeRoundLocked()
			}
			l.mu.Unlock()
		case <-tick:
			l.mu.Lock()
			if !l.syncing && l.err == nil {
				l.syncRoundLocked()
			}
			l.mu.Unlock()
		}
	}
}

// Close writes and syncs everything added (whatever the policy), closes the files and
// releases the lock. Waits in progress complete. It returns the failure that failed the
// log, if any.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()
	close(l.quit)
	<-l.done
	// A SetMeta or RemoveThrough that began before closed was set finishes first.
	l.manMu.Lock()
	//lint:ignore SA2001 a barrier, not a critical section
	l.manMu.Unlock()

	l.mu.Lock()
	for l.err == nil {
		if l.writing || l.syncing {
			l.cond.Wait()
			continue
		}
		if len(l.pending) > 0 {
			l.writeRoundLocked()
			continue
		}
		break
	}
	if l.err == nil && l.wseg != nil && l.wseg.f != nil {
		l.syncing, l.syncSeg = true, l.wseg
		target, f := l.written, l.wseg.f
		earlier := l.unsynced
		l.mu.Unlock()
		err := f.Sync()
		for _, ord := range earlier {
			if err == nil {
				err = l.syncPath(l.path(ord))
			}
		}
		if err == nil && l.opt.Sync.Mode == SyncNever {
			err = l.syncManifest()
		}
		if err == nil {
			err = l.fs.SyncDir(l.dir)
		}
		l.mu.Lock()
		l.syncing, l.syncSeg = false, nil
		if err != nil {
			l.failLocked(fmt.Errorf("sync on close: %w", err))
		} else {
			l.synced = target
		}
	} else if l.err == nil && l.opt.Manifest && l.opt.Sync.Mode == SyncNever {
		l.mu.Unlock() // nothing written since Open, but SetMeta may have been called
		err := l.syncManifest()
		if err == nil {
			err = l.fs.SyncDir(l.dir)
		}
		l.mu.Lock()
		if err != nil {
			l.failLocked(fmt.Errorf("sync on close: %w", err))
		}
	}
	l.cond.Broadcast()
	err := l.err
	l.mu.Unlock()
	if cerr := l.closeFiles(); err == nil {
		err = cerr
	}
	if cerr := l.lock.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("seglog: release lock: %w", cerr)
	}
	return err
}

// syncPath fsyncs a file written without syncing (SyncNever), unless it has been removed
// since.
func (l *Log) syncPath(path string) error {
	f, err := l.fs.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (l *Log) closeFiles() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	for _, s := range l.segs {
		if s.f != nil {
			if cerr := s.f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("seglog: close segment: %w", cerr)
			}
			s.f = nil
		}
	}
	if l.wseg != nil && l.wseg.f != nil { // a segment already dropped from segs
		l.wseg.f.Close()
		l.wseg.f = nil
	}
	return err
}

// SegmentInfo describes one segment.
type SegmentInfo struct {
	Ord  uint64
	Size int64 // bytes appended, pending ones included
}

// Segments lists the segments, oldest first; the last takes appends.
func (l *Log) Segments() []SegmentInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]SegmentInfo, len(l.segs))
	for i, s := range l.segs {
		out[i] = SegmentInfo{Ord: s.ord, Size: s.size}
	}
	return out
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// Path returns the file name of segment ord.
func (l *Log) Path(ord uint64) string { return l.path(ord) }

// noteBad records a bad region found while reading and reports it the first time.
func (l *Log) noteBad(ord uint64, b badRegion) {
	l.mu.Lock()
	var seen bool
	for _, s := range l.segs {
		if s.ord != ord {
			continue
		}
		for _, r := range s.bad {
			if r.off == b.off {
				seen = true
			}
		}
		if !seen {
			s.bad = append(s.bad, b)
		}
	}
	l.mu.Unlock()
	if !seen {
		l.report(Corruption{Segment: ord, Path: l.path(ord), Offset: b.off, Length: b.end - b.off, Reason: b.reason})
	}
}
