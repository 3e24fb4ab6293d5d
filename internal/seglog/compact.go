package seglog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// Seal ends the active segment if it holds anything, so the next record starts a new one,
// and waits until everything added so far is written. It returns the newest sealed
// segment's ordinal (0 if there is none): Compact may rewrite it and everything older.
func (l *Log) Seal(ctx context.Context) (uint64, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	seg := l.active()
	ord := seg.ord - 1
	if seg.size > 0 {
		l.rollLocked()
		ord = seg.ord
	}
	t := Ticket{end: l.appended}
	l.mu.Unlock()
	return ord, l.Wait(ctx, t, false)
}

// RemoveThrough deletes the segments with ordinals up to ord, oldest first, stopping at the
// first one that still takes appends or has records not yet written. It returns the
// newest ordinal removed (0 if none). Readers inside a removed segment skip to the next.
// With a manifest, the manifest says they are gone before any file goes, and meta, when
// not nil, replaces the caller's value in the same write.
func (l *Log) RemoveThrough(ord uint64, meta []byte) (uint64, error) {
	if len(meta) > maxMeta {
		return 0, fmt.Errorf("seglog: meta of %d bytes, above %d", len(meta), maxMeta)
	}
	l.manMu.Lock()
	defer l.manMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	n := 0
	for n < len(l.segs)-1 {
		s := l.segs[n]
		if s.ord > ord || !s.sealed || s.written != s.size {
			break
		}
		n++
	}
	victims := make([]uint64, n)
	for i, s := range l.segs[:n] {
		victims[i] = s.ord
	}
	l.mu.Unlock()
	if n == 0 {
		return 0, nil
	}
	newest := victims[n-1]
	if l.opt.Manifest {
		m := l.man
		m.first = max(m.first, newest+1)
		if meta != nil {
			m.meta = append([]byte(nil), meta...)
		}
		if err := l.writeManifest(m); err != nil {
			return 0, err
		}
	}
	// Only RemoveThrough and Compact take segments off the front, both under manMu.
	l.mu.Lock()
	l.segs = l.segs[n:]
	l.mu.Unlock()
	if err := l.removeFiles(victims); err != nil {
		return newest, err
	}
	return newest, nil
}

func (l *Log) removeFiles(ords []uint64) error {
	for _, o := range ords {
		if err := l.fs.Remove(l.path(o)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("seglog: remove segment: %w", err)
		}
	}
	if l.opt.Sync.Mode == SyncNever {
		return nil
	}
	// Without this a crash could bring an old segment back while a newer one is gone.
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("seglog: sync directory: %w", err)
	}
	return nil
}

// Compact replaces segment ord and every older one with one segment holding the records
// fill adds, returning their positions through add. ord must have been sealed (Seal) and
// nothing may read those segments meanwhile. The new file starts with a checkpoint record
// and is written as ord.seg.tmp, synced, renamed over ord.seg, and the directory synced;
// then the older files are removed. A crash at any point leaves either the old segments
// (the temporary file is discarded at Open) or the new one (Open removes the older
// segments the checkpoint made obsolete).
func (l *Log) Compact(ord uint64, fill func(add func(typ byte, payload []byte) (Pos, error)) error) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if ord == 0 || ord >= l.active().ord {
		l.mu.Unlock()
		return fmt.Errorf("seglog: compact %d: not a sealed segment", ord)
	}
	l.mu.Unlock()

	var size int64
	err := l.replaceFile(l.path(ord), true, func(f File) (err error) {
		size, err = l.fillCompacted(f, ord, fill)
		return err
	})
	if err != nil {
		return fmt.Errorf("seglog: compact: %w", err)
	}

	l.mu.Lock()
	var old []uint64
	keep := make([]*segment, 0, len(l.segs)+1)
	var found bool
	for _, s := range l.segs {
		switch {
		case s.ord < ord:
			old = append(old, s.ord)
			continue
		case s.ord == ord:
			s.size, s.written, s.bad, found = size, size, nil, true
		case !found:
			keep = append(keep, &segment{ord: ord, size: size, written: size, sealed: true})
			found = true
		}
		keep = append(keep, s)
	}
	l.segs = keep
	l.mu.Unlock()
	if l.opt.Manifest && len(old) > 0 {
		l.manMu.Lock()
		m := l.man
		m.first = max(m.first, ord)
		err := l.writeManifest(m)
		l.manMu.Unlock()
		if err != nil {
			return err
		}
	}
	return l.removeFiles(old)
}

// replaceFile writes a new version of final through write into final.tmp, fsyncs it (when
// sync), renames it over final and fsyncs the directory (when sync). On failure before the
// rename final is untouched and the temporary file removed; Open removes any left behind.
func (l *Log) replaceFile(final string, sync bool, write func(File) error) error {
	tmp := final + tmpSuffix
	f, err := l.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	err = write(f)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.fs.Rename(tmp, final)
	}
	if err != nil {
		l.fs.Remove(tmp)
		return err
	}
	if sync {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return fmt.Errorf("sync directory: %w", err)
		}
	}
	return nil
}

func (l *Log) fillCompacted(f File, ord uint64, fill func(add func(typ byte, payload []byte) (Pos, error)) error) (int64, error) {
	var buf []byte
	var off int64
	buf = appendRecord(buf, l.opt.Version, typeCheckpoint, binary.LittleEndian.AppendUint64(nil, ord))
	off = int64(len(buf))
	var werr error
	add := func(typ byte, payload []byte) (Pos, error) {
		if werr != nil {
			return Pos{}, werr
		}
		if typ >= TypeReserved {
			return Pos{}, fmt.Errorf("seglog: record type %#x is reserved", typ)
		}
		p := Pos{Seg: ord, Off: off}
		buf = appendRecord(buf, l.opt.Version, typ, payload)
		off += int64(RecordSize(len(payload)))
		if len(buf) >= 1<<20 {
			_, werr = f.Write(buf)
			buf = buf[:0]
		}
		return p, werr
	}
	if err := fill(add); err != nil {
		return 0, err
	}
	if werr != nil {
		return 0, werr
	}
	if _, err := f.Write(buf); err != nil {
		return 0, err
	}
	return off, nil
}
