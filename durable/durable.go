// Package durable declares what filequeue and filestore share: the file-system interface
// they write through, the sync policy that says when writes reach the disk, and the report
// of damaged data found at Open. Both packages alias these names, so one value (a policy
// read from a flag, a fault-injecting FS) configures either.
package durable

import (
	"fmt"
	"time"

	"github.com/ternmq/tern/internal/seglog"
)

// FS is every file-system operation the durable packages perform; they never touch the os
// package directly, so tests can inject faults and simulate a crash. Default: OSFS().
type FS = seglog.FS

// File is an open file of an FS. Files opened for writing are only appended to.
type File = seglog.File

// OSFS returns the operating system's file system, the default.
func OSFS() FS { return seglog.OSFS() }

// Corruption describes bytes that could not be read and were skipped, a segment file
// missing from the numbering, or a torn tail cut off at Open.
type Corruption = seglog.Corruption

// SyncPolicy says when written records reach the disk. The zero value is SyncEveryWrite.
// A SyncPolicy is a small value: copy it freely.
type SyncPolicy struct {
	kind     syncKind
	interval time.Duration
}

type syncKind uint8

const (
	everyWrite syncKind = iota
	periodic
	never
)

var (
	// SyncEveryWrite: a write returns only after an fsync covering it; concurrent writes
	// share fsyncs (group commit). The default, and what survives power loss. One writer
	// at a time is bound by the disk's fsync rate: write from several goroutines, or use
	// the asynchronous forms, to batch.
	SyncEveryWrite = SyncPolicy{}
	// SyncNone: a write returns once handed to the operating system, which flushes it when
	// it likes. Survives a crash of the process, not of the machine.
	SyncNone = SyncPolicy{kind: never}
)

// SyncInterval: a write returns once handed to the operating system; a background
// goroutine fsyncs every d. A crash of the machine loses at most the last d of writes.
// d must be positive (Open refuses the policy otherwise).
func SyncInterval(d time.Duration) SyncPolicy { return SyncPolicy{kind: periodic, interval: d} }

// EveryWrite reports whether the policy is SyncEveryWrite.
func (p SyncPolicy) EveryWrite() bool { return p.kind == everyWrite }

// Interval returns d and true for SyncInterval(d), and false for the other policies.
func (p SyncPolicy) Interval() (time.Duration, bool) { return p.interval, p.kind == periodic }

// String names the policy: "every-write", "interval(D)" or "none".
func (p SyncPolicy) String() string {
	switch p.kind {
	case everyWrite:
		return "every-write"
	case periodic:
		return fmt.Sprintf("interval(%v)", p.interval)
	default:
		return "none"
	}
}
