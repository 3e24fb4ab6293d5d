package seglog

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

func parseName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	ord, err := strconv.ParseUint(digits, 10, 64)
	return ord, err == nil && ord > 0
}

// recover lists the segments, drops those a checkpoint made obsolete, scans the rest and
// prepares the last one for appends.
func (l *Log) recover() error {
	entries, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("seglog: read directory: %w", err)
	}
	var ords []uint64
	dirty := false
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			continue // another log's directory, or the caller's: never ours
		}
		if strings.HasSuffix(name, tmpSuffix) {
			// An interrupted compaction: the rename never happened, the old segments stand.
			if err := l.fs.Remove(filepath.Join(l.dir, name)); err != nil {
				return fmt.Errorf("seglog: remove %s: %w", name, err)
			}
			dirty = true
			continue
		}
		if ord, ok := parseName(name); ok {
			ords = append(ords, ord)
		}
	}
	slices.Sort(ords)
	var maxOrd uint64
	if len(ords) > 0 {
		maxOrd = ords[len(ords)-1]
	}
	for i := len(ords) - 1; i > 0; i-- {
		ok, err := l.isCheckpoint(ords[i])
		if err != nil {
			return err
		}
		if ok {
			// A compaction got past its rename and died before removing what it replaced.
			for _, old := range ords[:i] {
				if err := l.fs.Remove(l.path(old)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("seglog: remove obsolete segment: %w", err)
				}
			}
			ords, dirty, l.ckpt = ords[i:], true, ords[i]
			break
		}
	}
	if l.opt.Manifest {
		if err := l.checkManifest(ords); err != nil {
			return err
		}
	}
	for i := 1; i < len(ords); i++ {
		if gap := ords[i] - ords[i-1]; gap > 1 {
			l.gaps = append(l.gaps, Span{ords[i-1] + 1, ords[i] - 1})
			l.report(Corruption{Segment: ords[i-1] + 1, Path: l.path(ords[i-1] + 1),
				Reason: fmt.Sprintf("missing segments %d to %d", ords[i-1]+1, ords[i]-1)})
		}
	}
	slices.SortFunc(l.gaps, func(a, b Span) int { return cmp.Compare(a.First, b.First) })
	tail, err := l.lastNonEmpty(ords)
	if err != nil {
		return err
	}
	sc := l.newScanner()
	for i, ord := range ords {
		seg, removed, err := l.scanSegment(&sc, ord, i == tail)
		if err != nil {
			return err
		}
		dirty = dirty || removed
		if seg != nil {
			l.segs = append(l.segs, seg)
		}
	}
	if dirty {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return fmt.Errorf("seglog: sync directory: %w", err)
		}
	}
	for _, s := range l.segs {
		s.sealed = true
	}
	if n := len(l.segs); n > 0 && l.segs[n-1].size < l.opt.SegmentSize {
		last := l.segs[n-1]
		f, err := l.fs.OpenFile(l.path(last.ord), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("seglog: open segment: %w", err)
		}
		last.f, last.sealed = f, false
		l.wseg, l.lastWritten = last, last
		return nil
	}
	l.segs = append(l.segs, &segment{ord: maxOrd + 1})
	return nil
}

// isCheckpoint reports whether segment ord was written by Compact: it starts with a
// checkpoint record naming ord. Only that record's bytes are read.
func (l *Log) isCheckpoint(ord uint64) (bool, error) {
	f, err := l.fs.OpenFile(l.path(ord), os.O_RDONLY, 0)
	if err != nil {
		return false, fmt.Errorf("seglog: open segment: %w", err)
	}
	defer f.Close()
	var b [headerSize + minLen + 8]byte
	if n, err := f.ReadAt(b[:], 0); n < len(b) {
		if err == io.EOF {
			err = nil
		}
		return false, err
	}
	return binary.LittleEndian.Uint32(b[:]) == minLen+8 &&
		binary.LittleEndian.Uint32(b[4:]) == crc32.Checksum(b[headerSize:], castagnoli) &&
		b[headerSize] != 0 && b[headerSize+1] == typeCheckpoint &&
		binary.LittleEndian.Uint64(b[headerSize+minLen:]) == ord, nil
}

// lastNonEmpty returns the index of the newest segment holding any byte, or -1. Its tail is
// where a crash tears records; empty files after it were created just before one.
func (l *Log) lastNonEmpty(ords []uint64) (int, error) {
	for i := len(ords) - 1; i >= 0; i-- {
		f, err := l.fs.OpenFile(l.path(ords[i]), os.O_RDONLY, 0)
		if err != nil {
			return 0, fmt.Errorf("seglog: open segment: %w", err)
		}
		size, err := f.Size()
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("seglog: stat segment: %w", err)
		}
		if size > 0 {
			return i, nil
		}
	}
	return -1, nil
}

// scanSegment replays one segment. An empty file is removed (nil segment); a torn tail of
// the last segment is truncated; bad regions elsewhere are reported and skipped.
func (l *Log) scanSegment(sc *scanner, ord uint64, last bool) (*segment, bool, error) {
	path := l.path(ord)
	f, err := l.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, false, fmt.Errorf("seglog: open segment: %w", err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, false, fmt.Errorf("seglog: stat segment: %w", err)
	}
	if size == 0 {
		// Created just before a crash, or its only data was never synced.
		if err := l.fs.Remove(path); err != nil {
			return nil, false, fmt.Errorf("seglog: remove empty segment: %w", err)
		}
		l.report(Corruption{Segment: ord, Path: path, Reason: "empty segment file removed"})
		return nil, true, nil
	}
	seg := &segment{ord: ord, size: size, written: size}
	sc.reset(f)
	defer sc.shrink()
	for off := int64(0); off < size; {
		rec, bad, err := sc.next(off, size)
		if err != nil {
			return nil, false, fmt.Errorf("seglog: read %s: %w", path, err)
		}
		if bad != nil {
			if last && bad.end == size {
				if err := l.truncate(path, bad.off); err != nil {
					return nil, false, err
				}
				l.report(Corruption{Segment: ord, Path: path, Offset: bad.off, Length: size - bad.off,
					Reason: "torn tail truncated: " + bad.reason})
				seg.size, seg.written = bad.off, bad.off
				break
			}
			l.report(Corruption{Segment: ord, Path: path, Offset: bad.off, Length: bad.end - bad.off,
				Reason: bad.reason})
			seg.bad = append(seg.bad, *bad)
			off = bad.end
			continue
		}
		rec.Pos = Pos{Seg: ord, Off: off}
		off += rec.Size
		if rec.Type >= TypeReserved || l.opt.Replay == nil {
			continue
		}
		if err := l.opt.Replay(rec); err != nil {
			return nil, false, err
		}
	}
	return seg, false, nil
}

func (l *Log) truncate(path string, size int64) error {
	f, err := l.fs.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("seglog: open torn segment: %w", err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("seglog: truncate torn tail: %w", err)
	}
	return nil
}
