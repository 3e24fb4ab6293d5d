package seglog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// The manifest (Options.Manifest) is one file, MANIFEST, holding one record framed like
// every other (record.go), version manifestVersion, type typeManifest:
//
//	first u64, last u64, meta (the rest)
//
// Segments first to last may exist and every one below first was removed on purpose; meta
// is the caller's (SetMeta). Open compares it with the segment files: a segment missing at
// the front or the back is reported, which the numbering alone cannot show (it sees only
// gaps between segments that exist). The file is replaced, never rewritten in place:
// MANIFEST.tmp is written and synced, renamed over MANIFEST, and the directory synced.
const (
	manifestName    = "MANIFEST"
	manifestVersion = 1
	manifestFixed   = 16
	maxMeta         = 4 << 10
)

// Span is a range of segment ordinals, both ends included.
type Span struct{ First, Last uint64 }

type manifest struct {
	first, last uint64
	meta        []byte
}

// readManifest returns the manifest, ok false when there is none. A damaged one is
// reported and treated as absent, so Open goes on with what the segments say.
func (l *Log) readManifest() (m manifest, ok bool, err error) {
	path := filepath.Join(l.dir, manifestName)
	f, err := l.fs.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("seglog: open manifest: %w", err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return m, false, fmt.Errorf("seglog: stat manifest: %w", err)
	}
	bad := func(reason string) (manifest, bool, error) {
		l.report(Corruption{Path: path, Length: size, Reason: "manifest ignored: " + reason})
		return manifest{}, false, nil
	}
	limit := int64(headerSize + minLen + manifestFixed + maxMeta)
	if size > limit {
		return bad(fmt.Sprintf("%d bytes, more than %d", size, limit))
	}
	sc := scanner{maxLen: limit, maxVer: manifestVersion}
	sc.reset(f)
	rec, reason, err := sc.parse(0, size)
	switch {
	case err != nil && err != io.ErrUnexpectedEOF:
		return m, false, fmt.Errorf("seglog: read manifest: %w", err)
	case reason != "":
		return bad(reason)
	case rec.Version != manifestVersion || rec.Type != typeManifest:
		return bad(fmt.Sprintf("version %d type %#x", rec.Version, rec.Type))
	case rec.Size != size || len(rec.Payload) < manifestFixed:
		return bad("wrong size")
	}
	m.first = binary.LittleEndian.Uint64(rec.Payload)
	m.last = binary.LittleEndian.Uint64(rec.Payload[8:])
	m.meta = append([]byte(nil), rec.Payload[manifestFixed:]...)
	return m, true, nil
}

// writeManifest replaces the manifest with m. The caller holds manMu. Under SyncNever
// nothing is synced (a crash of the process keeps the rename; Close syncs it).
func (l *Log) writeManifest(m manifest) error {
	if !l.opt.Manifest {
		return nil
	}
	payload := make([]byte, manifestFixed, manifestFixed+len(m.meta))
	binary.LittleEndian.PutUint64(payload, m.first)
	binary.LittleEndian.PutUint64(payload[8:], m.last)
	payload = append(payload, m.meta...)
	buf := appendRecord(nil, manifestVersion, typeManifest, payload)

	err := l.replaceFile(filepath.Join(l.dir, manifestName), l.opt.Sync.Mode != SyncNever,
		func(f File) error {
			_, err := f.Write(buf)
			return err
		})
	if err != nil {
		return fmt.Errorf("seglog: write manifest: %w", err)
	}
	l.man = m
	return nil
}

// checkManifest compares the manifest with the segment files found (ords, ascending, the
// ones a checkpoint made obsolete left out) and reports segments missing at either end;
// gaps between segments that exist are reported by recover.
func (l *Log) checkManifest(ords []uint64) error {
	m, ok, err := l.readManifest()
	if err != nil || !ok {
		return err
	}
	l.man, l.meta, l.hadManifest = m, m.meta, true
	first := max(m.first, l.ckpt) // a compaction removed the older ones
	if m.last < first {
		return nil // no segment was expected
	}
	i := 0
	for i < len(ords) && ords[i] < first {
		i++ // older than first: a removal the manifest recorded before the files went
	}
	if i == len(ords) {
		l.missingSpan(Span{first, m.last}, "missing: every segment the manifest names")
		return nil
	}
	if lo := ords[i]; lo > first {
		l.missingSpan(Span{first, min(lo-1, m.last)}, "missing at the front of the log")
	}
	if hi := ords[len(ords)-1]; hi < m.last {
		l.missingSpan(Span{hi + 1, m.last}, "missing at the end of the log")
	}
	return nil
}

// missingSpan reports and remembers segments that should be there and are not.
func (l *Log) missingSpan(s Span, why string) {
	if s.Last < s.First {
		return
	}
	l.gaps = append(l.gaps, s)
	l.report(Corruption{Segment: s.First, Path: l.path(s.First),
		Reason: fmt.Sprintf("segments %d to %d %s", s.First, s.Last, why)})
}

// settleManifest writes, at the end of Open, a manifest describing the segments that
// exist now (so a loss is reported once), unless the one on disk already does.
func (l *Log) settleManifest() error {
	if !l.opt.Manifest {
		return nil
	}
	m := manifest{first: l.active().ord, meta: l.meta}
	for _, s := range l.segs {
		if s.size > 0 || s.f != nil { // its file exists
			m.first = min(m.first, s.ord)
			m.last = s.ord
		}
	}
	if m.last == 0 {
		m.last = m.first - 1
	}
	if l.hadManifest && l.man.first == m.first && l.man.last == m.last {
		return nil
	}
	l.manMu.Lock()
	defer l.manMu.Unlock()
	return l.writeManifest(m)
}

// noteCreated records in the manifest that segment ord now exists. Writer role.
func (l *Log) noteCreated(ord uint64) error {
	if !l.opt.Manifest {
		return nil
	}
	l.manMu.Lock()
	defer l.manMu.Unlock()
	if ord <= l.man.last {
		return nil
	}
	m := l.man
	m.last = ord
	return l.writeManifest(m)
}

// Meta returns the caller's value the manifest held at Open, or nil (no manifest, or a
// new or damaged one). The caller must not modify it.
func (l *Log) Meta() []byte { return l.meta }

// HadManifest reports whether Open found an intact manifest.
func (l *Log) HadManifest() bool { return l.hadManifest }

// Gaps returns the ranges of segment ordinals Open found missing: between segments that
// exist and, with a manifest, at either end.
func (l *Log) Gaps() []Span { return l.gaps }

// SetMeta durably replaces the caller's value in the manifest (up to 4 KiB). Cost: one
// file written, synced and renamed, and a directory sync (no syncs under SyncNever).
// Safe for concurrent use; calls are serialised.
func (l *Log) SetMeta(meta []byte) error {
	if !l.opt.Manifest {
		return errors.New("seglog: SetMeta without a manifest")
	}
	if len(meta) > maxMeta {
		return fmt.Errorf("seglog: meta of %d bytes, above %d", len(meta), maxMeta)
	}
	l.manMu.Lock()
	defer l.manMu.Unlock()
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	m := l.man
	m.meta = append([]byte(nil), meta...)
	return l.writeManifest(m)
}

// syncManifest makes the manifest durable at Close under SyncNever.
func (l *Log) syncManifest() error {
	if !l.opt.Manifest {
		return nil
	}
	return l.syncPath(filepath.Join(l.dir, manifestName))
}
