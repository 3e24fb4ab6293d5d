package filequeue

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/ternmq/tern/durable"
	"github.com/ternmq/tern/internal/seglog"
)

// Option configures Open.
type Option func(*config)

type config struct {
	seglog.Shared
	maxPending int
}

// Documented defaults; a test checks them against defaultConfig.
const (
	DefaultSegmentSize = 16 << 20
)

func defaultConfig() config {
	return config{Shared: seglog.Shared{Sync: SyncEveryWrite, SegmentSize: DefaultSegmentSize,
		FS: seglog.OSFS(), OnCorruption: logCorruption}, maxPending: DefaultMaxPending}
}

func (c *config) validate() error {
	if err := c.Check("filequeue"); err != nil {
		return err
	}
	if c.OnCorruption == nil {
		c.OnCorruption = logCorruption
	}
	if c.maxPending < 1 {
		return fmt.Errorf("filequeue: max pending must be at least 1")
	}
	return nil
}

// SyncPolicy says when enqueued entries reach the disk; see durable.SyncPolicy.
type SyncPolicy = durable.SyncPolicy

// SyncEveryWrite is the default policy; see durable.SyncEveryWrite.
var SyncEveryWrite = durable.SyncEveryWrite

// SyncNone leaves flushing to the operating system; see durable.SyncNone.
var SyncNone = durable.SyncNone

// SyncInterval fsyncs every d from a background goroutine; see durable.SyncInterval.
func SyncInterval(d time.Duration) SyncPolicy { return durable.SyncInterval(d) }

// WithSync sets the sync policy. Default SyncEveryWrite: Enqueue waits for an fsync,
// shared by concurrent callers.
func WithSync(p SyncPolicy) Option { return func(c *config) { c.Sync = p } }

// WithSegmentSize sets the size at which a segment file is closed and a new one started.
// Fully acknowledged segments are deleted whole, so smaller segments give disk space back
// sooner at the cost of more files. Default DefaultSegmentSize (16 MiB); at least 1 KiB.
func WithSegmentSize(n int64) Option { return func(c *config) { c.SegmentSize = n } }

// WithMaxPending bounds how many EnqueueAsync entries may wait for their sync at once;
// EnqueueAsync blocks (bounded by its ctx) while that many wait. Each holds its encoded
// record in memory until written. Default: DefaultMaxPending (8192).
func WithMaxPending(n int) Option { return func(c *config) { c.maxPending = n } }

// FS is the file-system interface the queue uses; see WithFS.
type FS = durable.FS

// File is an open file of an FS.
type File = durable.File

// OSFS returns the operating system's file system, the default.
func OSFS() FS { return durable.OSFS() }

// WithFS makes the queue use fs for every file operation. Default OSFS(). Tests use it to
// inject faults.
func WithFS(fs FS) Option { return func(c *config) { c.FS = fs } }

// Corruption describes damaged or missing data the queue skipped; see durable.Corruption.
type Corruption = durable.Corruption

// WithCorruptionHandler sets a function told about every corrupt region skipped, torn tail
// truncated, segment missing (between others or, by the manifest, at the front or the
// end of the queue) and range of entries lost with missing segments. It runs during Open
// and, for damage found later, on the goroutine calling Read; it must not block or call
// the queue. Default (and nil): each report is logged at warn level through slog.Default.
func WithCorruptionHandler(fn func(Corruption)) Option {
	return func(c *config) { c.OnCorruption = fn }
}

// logCorruption is the default corruption handler: damage is never skipped unseen.
func logCorruption(c Corruption) {
	slog.Warn("filequeue: damaged or missing data", "path", c.Path, "offset", c.Offset,
		"length", c.Length, "reason", c.Reason)
}
