package seglog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

// Reader streams records from a position, one window of a segment at a time. It sees only
// written records and follows the log as it grows: at the end it returns io.EOF, and a
// later Next returns what was written since. Bad regions are reported (once) and skipped;
// a segment removed meanwhile is skipped. A Reader is not safe for concurrent use.
type Reader struct {
	l    *Log
	pos  Pos
	f    File // read handle on segment fOrd
	fOrd uint64
	sc   scanner
}

// NewReader returns a Reader positioned at from; Pos{} means the start of the log.
func (l *Log) NewReader(from Pos) *Reader {
	return &Reader{l: l, pos: from, sc: l.newScanner()}
}

// Pos returns where the next record will be looked for.
func (r *Reader) Pos() Pos { return r.pos }

// Seek moves the reader; p must be a record boundary (a Pos returned by the log).
func (r *Reader) Seek(p Pos) { r.pos = p }

// Close releases the reader's file.
func (r *Reader) Close() error {
	r.sc.shrink()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// segView is what a reader needs to know about a segment, taken under the log's lock.
type segView struct {
	ord      uint64 // first segment at or after the one asked for
	limit    int64  // bytes readable
	finished bool   // sealed and fully written: nothing more will come
	skipTo   int64  // end of a known bad region containing the offset, else 0
	ok       bool   // such a segment exists
}

func (l *Log) view(ord uint64, off int64) segView {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].ord >= ord })
	if i == len(l.segs) {
		return segView{}
	}
	s := l.segs[i]
	v := segView{ord: s.ord, limit: s.written, finished: s.sealed && s.written == s.size, ok: true}
	if s.ord == ord {
		for _, b := range s.bad {
			if off >= b.off && off < b.end {
				v.skipTo = b.end
			}
		}
	}
	return v
}

// open makes r.f the read handle of segment ord; false means the file is gone.
func (r *Reader) open(ord uint64) (bool, error) {
	if r.f != nil && r.fOrd == ord {
		return true, nil
	}
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	f, err := r.l.fs.OpenFile(r.l.path(ord), os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("seglog: open segment: %w", err)
	}
	r.f, r.fOrd = f, ord
	r.sc.reset(f)
	return true, nil
}

// Next returns the next record, or io.EOF when there is none written yet. The payload is
// valid until the next call.
func (r *Reader) Next() (Record, error) {
	for {
		v := r.l.view(r.pos.Seg, r.pos.Off)
		switch {
		case !v.ok:
			return Record{}, io.EOF
		case v.ord != r.pos.Seg: // removed or missing: go on with the next one
			r.pos = Pos{Seg: v.ord}
			continue
		case v.skipTo > 0:
			r.pos.Off = v.skipTo
			continue
		case r.pos.Off >= v.limit:
			if v.finished {
				r.pos = Pos{Seg: r.pos.Seg + 1}
				continue
			}
			return Record{}, io.EOF
		}
		ok, err := r.open(r.pos.Seg)
		if err != nil {
			return Record{}, err
		}
		if !ok {
			r.pos = Pos{Seg: r.pos.Seg + 1}
			continue
		}
		rec, bad, err := r.sc.next(r.pos.Off, v.limit)
		if err != nil {
			return Record{}, fmt.Errorf("seglog: read segment %d: %w", r.pos.Seg, err)
		}
		if bad != nil {
			r.l.noteBad(r.pos.Seg, *bad)
			r.pos.Off = bad.end
			continue
		}
		rec.Pos = r.pos
		r.pos.Off += rec.Size
		if rec.Type >= TypeReserved {
			continue
		}
		return rec, nil
	}
}

// ReadAt returns the record starting exactly at p, which must be written. The payload is
// valid until the next call.
func (r *Reader) ReadAt(p Pos) (Record, error) {
	v := r.l.view(p.Seg, p.Off)
	if !v.ok || v.ord != p.Seg || p.Off >= v.limit {
		return Record{}, fmt.Errorf("seglog: no record at %v", p)
	}
	ok, err := r.open(p.Seg)
	if err != nil {
		return Record{}, err
	}
	if !ok {
		return Record{}, fmt.Errorf("seglog: no record at %v: segment removed", p)
	}
	rec, reason, err := r.sc.parse(p.Off, v.limit)
	if err != nil {
		return Record{}, fmt.Errorf("seglog: read %v: %w", p, err)
	}
	if reason != "" {
		return Record{}, fmt.Errorf("seglog: record at %v: %s", p, reason)
	}
	rec.Pos = p
	return rec, nil
}
