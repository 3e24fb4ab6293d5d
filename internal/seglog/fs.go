package seglog

import (
	"errors"
	"io"
	"io/fs"
	"os"
)

// FS is every file-system operation the log performs. The log never touches the os package
// directly, so tests can wrap the real file system to count syncs, inject failures and
// simulate a crash (see package faultfs).
type FS interface {
	// OpenFile opens a file like os.OpenFile.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Remove(name string) error
	Rename(oldpath, newpath string) error
	ReadDir(name string) ([]fs.DirEntry, error)
	MkdirAll(path string, perm fs.FileMode) error
	// SyncDir makes the directory's entries (created, renamed and removed names) durable.
	SyncDir(name string) error
	// Lock takes an exclusive lock on the named file, creating it if needed, without
	// waiting: it returns an error wrapping ErrLocked when someone else holds it. Closing the
	// result releases the lock.
	Lock(name string) (io.Closer, error)
}

// File is an open file. Writes go to the end of files opened for writing: the log only
// appends.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.Closer
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
}

// OSFS returns the FS of the operating system.
func OSFS() FS { return osFS{} }

type osFS struct{}

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error)   { return os.ReadDir(name) }
func (osFS) MkdirAll(path string, perm fs.FileMode) error { return os.MkdirAll(path, perm) }
func (osFS) SyncDir(name string) error                    { return syncDir(name) }
func (osFS) Lock(name string) (io.Closer, error)          { return lockFile(name) }

// ErrLocked is returned by Open when another process (or another Log in this process) holds
// the directory.
var ErrLocked = errors.New("seglog: directory locked by another process")
