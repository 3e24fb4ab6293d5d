package seglog

import (
	"fmt"
	"time"
)

// Shared holds the options filequeue and filestore both offer (WithSync, WithSegmentSize,
// WithFS, WithCorruptionHandler); the config of each embeds it, so the two check and pass
// them on the same way.
type Shared struct {
	Sync         PublicSync // a durable.SyncPolicy; never nil
	SegmentSize  int64
	FS           FS
	OnCorruption func(Corruption) // nil: not told
}

// Check refuses settings Open cannot use; pkg prefixes the error.
func (s *Shared) Check(pkg string) error {
	if p := SyncOf(s.Sync); p.Mode == SyncPeriodic && p.Interval <= 0 {
		return fmt.Errorf("%s: sync interval must be positive", pkg)
	}
	if s.SegmentSize < 1<<10 {
		return fmt.Errorf("%s: segment size below 1 KiB", pkg)
	}
	if s.FS == nil {
		return fmt.Errorf("%s: nil FS", pkg)
	}
	return nil
}

// LogOptions returns the options of a log written in format version, as s sets them; the
// caller adds the rest (Replay, Manifest).
func (s *Shared) LogOptions(version byte) Options {
	return Options{FS: s.FS, SegmentSize: s.SegmentSize, Sync: SyncOf(s.Sync), Version: version,
		OnCorruption: s.OnCorruption}
}

// PublicSync is the view of durable.SyncPolicy that SyncOf reads (seglog cannot import the
// package that aliases its own types).
type PublicSync interface {
	EveryWrite() bool
	Interval() (time.Duration, bool)
}

// SyncOf converts a public sync policy into the log's.
func SyncOf(p PublicSync) SyncPolicy {
	if p.EveryWrite() {
		return SyncPolicy{Mode: SyncEvery}
	}
	if d, ok := p.Interval(); ok {
		return SyncPolicy{Mode: SyncPeriodic, Interval: d}
	}
	return SyncPolicy{Mode: SyncNever}
}
