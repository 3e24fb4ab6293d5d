package filestore

import (
	"errors"
	"time"

	"github.com/ternmq/tern/durable"
	"github.com/ternmq/tern/internal/seglog"
)

// Option configures Open.
type Option func(*config)

type config struct {
	seglog.Shared
	ttl     time.Duration
	onError func(error)

	// Unexported knobs, for tests.
	compactMin int64            // dead bytes needed before compacting
	purgeEvery time.Duration    // TTL sweep period; derived from ttl when zero
	now        func() time.Time // clock for Time stamps and the TTL
	onMaintain func()           // called after each background purge or compaction
}

// Documented defaults; a test checks them against defaultConfig.
const (
	DefaultSegmentSize = 4 << 20
)

func defaultConfig() config {
	return config{
		Shared:     seglog.Shared{Sync: SyncEveryWrite, SegmentSize: DefaultSegmentSize, FS: seglog.OSFS()},
		compactMin: DefaultSegmentSize, now: time.Now,
	}
}

func (c *config) validate() error {
	if err := c.Check("filestore"); err != nil {
		return err
	}
	if c.ttl < 0 {
		return errors.New("filestore: negative TTL")
	}
	return nil
}

// purgePeriod is how often the TTL sweep runs: a quarter of the TTL, between a second and
// ten minutes, so a record outlives its TTL by at most that much.
func (c *config) purgePeriod() time.Duration {
	if c.purgeEvery > 0 {
		return c.purgeEvery
	}
	return min(max(c.ttl/4, time.Second), 10*time.Minute)
}

// SyncPolicy says when records reach the disk; see durable.SyncPolicy.
type SyncPolicy = durable.SyncPolicy

// SyncEveryWrite is the default policy; see durable.SyncEveryWrite.
var SyncEveryWrite = durable.SyncEveryWrite

// SyncNone leaves flushing to the operating system; see durable.SyncNone.
var SyncNone = durable.SyncNone

// SyncInterval fsyncs every d from a background goroutine; see durable.SyncInterval.
func SyncInterval(d time.Duration) SyncPolicy { return durable.SyncInterval(d) }

// WithSync sets the sync policy. Default SyncEveryWrite: Put and Reset wait for an fsync,
// shared by concurrent callers.
func WithSync(p SyncPolicy) Option { return func(c *config) { c.Sync = p } }

// WithSegmentSize sets the size at which a segment file is closed and a new one started;
// it is also about how many dead bytes accumulate before a compaction. Default
// DefaultSegmentSize (4 MiB); at least 1 KiB.
func WithSegmentSize(n int64) Option {
	return func(c *config) { c.SegmentSize, c.compactMin = n, n }
}

// FS is the file-system interface the store uses; see WithFS.
type FS = durable.FS

// File is an open file of an FS.
type File = durable.File

// OSFS returns the operating system's file system, the default.
func OSFS() FS { return durable.OSFS() }

// WithFS makes the store use fs for every file operation. Default OSFS(). Tests use it to
// inject faults.
func WithFS(fs FS) Option { return func(c *config) { c.FS = fs } }

// WithTTL purges records whose Time is older than d: at Open and then periodically (every
// d/4, between a second and ten minutes) from a goroutine the Store owns, stopped by Close.
// It bounds what a session that is never resumed leaves on disk. Default 0: no purge.
func WithTTL(d time.Duration) Option { return func(c *config) { c.ttl = d } }

// Corruption describes damaged or missing data the store skipped; see durable.Corruption.
type Corruption = durable.Corruption

// WithCorruptionHandler sets a function told about every corrupt region skipped, torn tail
// truncated and segment missing at Open. It must not block or call the store. Default: none.
func WithCorruptionHandler(fn func(Corruption)) Option {
	return func(c *config) { c.OnCorruption = fn }
}

// WithErrorHandler sets a function told when background work (compaction, TTL purge) fails.
// The store stays usable: a failed compaction leaves the old files in place and is tried
// again later. It runs on the store's goroutine and must not block. Default: none.
func WithErrorHandler(fn func(error)) Option { return func(c *config) { c.onError = fn } }
