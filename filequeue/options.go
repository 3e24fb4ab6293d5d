package filequeue

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/ternmq/tern/internal/seglog"
)

// FS is the file-system interface the queue uses; see WithFS.
type FS = seglog.FS

// File is an open file of an FS.
type File = seglog.File

// OSFS returns the operating system's file system, the default.
func OSFS() FS { return seglog.OSFS() }

// Corruption describes bytes the queue could not read and skipped, a segment file missing
// from the numbering, or a torn tail cut off at Open.
type Corruption = seglog.Corruption

// SyncPolicy says when enqueued entries reach the disk. The zero value is SyncEveryWrite.
type SyncPolicy struct{ p seglog.SyncPolicy }

var (
	// SyncEveryWrite: Enqueue returns only after an fsync covering the entry; concurrent
	// Enqueues share fsyncs (group commit). The default.
	SyncEveryWrite = SyncPolicy{}
	// SyncNone: Enqueue returns once the entry is written to the operating system, which
	// flushes it when it likes. Survives a crash of the process, not of the machine.
	SyncNone = SyncPolicy{seglog.SyncPolicy{Mode: seglog.SyncNever}}
)

// SyncInterval: Enqueue returns once the entry is written; a background goroutine fsyncs
// every d. A crash of the machine loses at most the last d of entries.
func SyncInterval(d time.Duration) SyncPolicy {
	return SyncPolicy{seglog.SyncPolicy{Mode: seglog.SyncPeriodic, Interval: d}}
}

func (p SyncPolicy) String() string { return p.p.String() }

// Option configures Open.
type Option func(*config)

type config struct {
	sync         SyncPolicy
	segmentSize  int64
	fs           FS
	onCorruption func(Corruption)
	maxPending   int
}

// Documented defaults; a test checks them against defaultConfig.
const (
	DefaultSegmentSize = 16 << 20
)

func defaultConfig() config {
	return config{sync: SyncEveryWrite, segmentSize: DefaultSegmentSize, fs: seglog.OSFS(),
		onCorruption: logCorruption, maxPending: DefaultMaxPending}
}

func (c *config) validate() error {
	if err := seglog.CheckOptions("filequeue", c.sync.p, c.segmentSize, c.fs); err != nil {
		return err
	}
	if c.onCorruption == nil {
		c.onCorruption = logCorruption
	}
	if c.maxPending < 1 {
		return fmt.Errorf("filequeue: max pending must be at least 1")
	}
	return nil
}

// WithSync sets the sync policy. Default SyncEveryWrite.
func WithSync(p SyncPolicy) Option { return func(c *config) { c.sync = p } }

// WithSegmentSize sets the size at which a segment file is closed and a new one started.
// Fully acknowledged segments are deleted whole, so smaller segments give disk space back
// sooner at the cost of more files. Default DefaultSegmentSize (16 MiB); at least 1 KiB.
func WithSegmentSize(n int64) Option { return func(c *config) { c.segmentSize = n } }

// WithMaxPending bounds how many EnqueueAsync entries may wait for their sync at once;
// EnqueueAsync blocks (bounded by its ctx) while that many wait. Each holds its encoded
// record in memory until written. Default: DefaultMaxPending (8192).
func WithMaxPending(n int) Option { return func(c *config) { c.maxPending = n } }

// WithFS makes the queue use fs for every file operation. Default OSFS(). Tests use it to
// inject faults.
func WithFS(fs FS) Option { return func(c *config) { c.fs = fs } }

// WithCorruptionHandler sets a function told about every corrupt region skipped, torn tail
// truncated, segment missing (between others or, by the manifest, at the front or the
// end of the queue) and range of entries lost with missing segments. It runs during Open
// and, for damage found later, on the goroutine calling Read; it must not block or call
// the queue. Default (and nil): each report is logged at warn level through slog.Default.
func WithCorruptionHandler(fn func(Corruption)) Option {
	return func(c *config) { c.onCorruption = fn }
}

// logCorruption is the default corruption handler: damage is never skipped unseen.
func logCorruption(c Corruption) {
	slog.Warn("filequeue: damaged or missing data", "path", c.Path, "offset", c.Offset,
		"length", c.Length, "reason", c.Reason)
}
