// Package faultfs wraps a seglog.FS for tests: it counts syncs, injects failures, and
// simulates a crash of the machine by dropping what was never synced.
//
// The crash model: bytes appended to a file after its last successful Sync are lost, and a
// file created since the last SyncDir of its directory disappears. Renames and removals are
// kept as they are (the log makes them durable with SyncDir right away). Files the wrapper
// has not touched are taken as durable.
package faultfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/ternmq/tern/internal/seglog"
)

// Op names an operation for fault injection.
type Op int

const (
	OpOpen Op = iota
	OpWrite
	OpSync
	OpSyncDir
	OpTruncate
	OpRemove
	OpRename
)

func (o Op) String() string {
	return [...]string{"open", "write", "sync", "syncdir", "truncate", "remove", "rename"}[o]
}

// ErrCrashed is returned by every operation after Crash.
var ErrCrashed = errors.New("faultfs: crashed")

// FS is the wrapper. Safe for concurrent use.
type FS struct {
	inner seglog.FS

	syncs    atomic.Int64
	dirSyncs atomic.Int64
	writes   atomic.Int64
	syncNote chan struct{}

	mu      sync.Mutex
	fault   func(op Op, path string) error
	files   map[string]*state
	locks   []io.Closer
	crashed bool
}

type state struct {
	synced  int64 // bytes known durable
	created bool  // name not yet made durable by SyncDir
}

// New wraps inner.
func New(inner seglog.FS) *FS {
	return &FS{inner: inner, files: make(map[string]*state), syncNote: make(chan struct{}, 1)}
}

// SetFault installs fn, called before each operation; a non-nil result fails it. A failed
// write first writes half its bytes, as a torn write would. nil removes the hook.
func (f *FS) SetFault(fn func(op Op, path string) error) {
	f.mu.Lock()
	f.fault = fn
	f.mu.Unlock()
}

// Syncs returns how many file syncs succeeded.
func (f *FS) Syncs() int64 { return f.syncs.Load() }

// DirSyncs returns how many directory syncs succeeded.
func (f *FS) DirSyncs() int64 { return f.dirSyncs.Load() }

// Writes returns how many writes succeeded.
func (f *FS) Writes() int64 { return f.writes.Load() }

// SyncNotify returns a channel that receives a value after file syncs.
func (f *FS) SyncNotify() <-chan struct{} { return f.syncNote }

// SyncedSize returns how many bytes of path would survive a crash now.
func (f *FS) SyncedSize(path string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.files[filepath.Clean(path)]
	if !ok {
		return -1
	}
	if st.created {
		return 0
	}
	return st.synced
}

func (f *FS) check(op Op, path string) error {
	f.mu.Lock()
	crashed, fault := f.crashed, f.fault
	f.mu.Unlock()
	if crashed {
		return ErrCrashed
	}
	if fault != nil {
		return fault(op, path) // unlocked: a hook may block to hold an operation
	}
	return nil
}

// Crash simulates the machine dying: unsynced bytes are cut off, unsynced new files
// removed, locks released, and every later operation fails with ErrCrashed. Open the
// directory again through a new FS.
func (f *FS) Crash() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.crashed = true
	var err error
	for path, st := range f.files {
		if st.created {
			if rerr := f.inner.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
			continue
		}
		h, oerr := f.inner.OpenFile(path, os.O_WRONLY, 0)
		if oerr != nil {
			if !errors.Is(oerr, fs.ErrNotExist) {
				err = errors.Join(err, oerr)
			}
			continue
		}
		if size, serr := h.Size(); serr == nil && size > st.synced {
			err = errors.Join(err, h.Truncate(st.synced))
		}
		h.Close()
	}
	for _, l := range f.locks {
		l.Close()
	}
	f.locks = nil
	return err
}

func (f *FS) OpenFile(name string, flag int, perm fs.FileMode) (seglog.File, error) {
	name = filepath.Clean(name)
	if err := f.check(OpOpen, name); err != nil {
		return nil, err
	}
	existed := false
	if h, err := f.inner.OpenFile(name, os.O_RDONLY, 0); err == nil {
		existed = true
		h.Close()
	}
	inner, err := f.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	st, ok := f.files[name]
	if !ok || !existed {
		st = &state{created: !existed}
		if existed {
			st.synced, _ = inner.Size()
		}
		f.files[name] = st
	}
	f.mu.Unlock()
	return &file{fs: f, inner: inner, path: name, st: st}, nil
}

func (f *FS) Remove(name string) error {
	name = filepath.Clean(name)
	if err := f.check(OpRemove, name); err != nil {
		return err
	}
	if err := f.inner.Remove(name); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.files, name)
	f.mu.Unlock()
	return nil
}

func (f *FS) Rename(oldpath, newpath string) error {
	oldpath, newpath = filepath.Clean(oldpath), filepath.Clean(newpath)
	if err := f.check(OpRename, newpath); err != nil {
		return err
	}
	if err := f.inner.Rename(oldpath, newpath); err != nil {
		return err
	}
	f.mu.Lock()
	if st, ok := f.files[oldpath]; ok {
		delete(f.files, oldpath)
		f.files[newpath] = st
	}
	f.mu.Unlock()
	return nil
}

func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if err := f.check(OpOpen, name); err != nil {
		return nil, err
	}
	return f.inner.ReadDir(name)
}

func (f *FS) MkdirAll(path string, perm fs.FileMode) error {
	if err := f.check(OpOpen, path); err != nil {
		return err
	}
	return f.inner.MkdirAll(path, perm)
}

func (f *FS) SyncDir(name string) error {
	name = filepath.Clean(name)
	if err := f.check(OpSyncDir, name); err != nil {
		return err
	}
	if err := f.inner.SyncDir(name); err != nil {
		return err
	}
	f.dirSyncs.Add(1)
	f.mu.Lock()
	for path, st := range f.files {
		if filepath.Dir(path) == name {
			st.created = false
		}
	}
	f.mu.Unlock()
	return nil
}

func (f *FS) Lock(name string) (io.Closer, error) {
	if err := f.check(OpOpen, name); err != nil {
		return nil, err
	}
	l, err := f.inner.Lock(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.locks = append(f.locks, l)
	f.mu.Unlock()
	return &lock{fs: f, inner: l}, nil
}

type lock struct {
	fs    *FS
	inner io.Closer
	once  sync.Once
}

func (l *lock) Close() error {
	var err error
	l.once.Do(func() {
		l.fs.mu.Lock()
		for i, c := range l.fs.locks {
			if c == l.inner {
				l.fs.locks = append(l.fs.locks[:i], l.fs.locks[i+1:]...)
				break
			}
		}
		crashed := l.fs.crashed
		l.fs.mu.Unlock()
		if !crashed { // Crash already released it
			err = l.inner.Close()
		}
	})
	return err
}

type file struct {
	fs    *FS
	inner seglog.File
	path  string
	st    *state // shared with every handle on the same file; orphaned once it is removed
}

func (h *file) Read(p []byte) (int, error) {
	if err := h.fs.check(OpOpen, h.path); err != nil {
		return 0, err
	}
	return h.inner.Read(p)
}

func (h *file) ReadAt(p []byte, off int64) (int, error) {
	if err := h.fs.check(OpOpen, h.path); err != nil {
		return 0, err
	}
	return h.inner.ReadAt(p, off)
}

func (h *file) Write(p []byte) (int, error) {
	if err := h.fs.check(OpWrite, h.path); err != nil {
		if errors.Is(err, ErrCrashed) {
			return 0, err
		}
		n, _ := h.inner.Write(p[:len(p)/2])
		return n, err
	}
	n, err := h.inner.Write(p)
	if err == nil {
		h.fs.writes.Add(1)
	}
	return n, err
}

func (h *file) Sync() error {
	if err := h.fs.check(OpSync, h.path); err != nil {
		return err
	}
	// Bytes counted in size were written before the fsync starts, so it covers them.
	size, err := h.inner.Size()
	if err != nil {
		return err
	}
	if err := h.inner.Sync(); err != nil {
		return err
	}
	h.fs.mu.Lock()
	if size > h.st.synced {
		h.st.synced = size
	}
	h.fs.mu.Unlock()
	h.fs.syncs.Add(1)
	select {
	case h.fs.syncNote <- struct{}{}:
	default:
	}
	return nil
}

func (h *file) Truncate(size int64) error {
	if err := h.fs.check(OpTruncate, h.path); err != nil {
		return err
	}
	if err := h.inner.Truncate(size); err != nil {
		return err
	}
	h.fs.mu.Lock()
	if h.st.synced > size {
		h.st.synced = size
	}
	h.fs.mu.Unlock()
	return nil
}

func (h *file) Size() (int64, error) { return h.inner.Size() }

// Close always closes the inner file, even after a crash, so tests leak no descriptors.
func (h *file) Close() error { return h.inner.Close() }
