//go:build unix

package seglog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// syncDir fsyncs a directory so that the names created, renamed or removed in it survive a
// crash; on Linux, fsync of a new file alone does not make its name durable.
func syncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// lockFile takes flock(LOCK_EX|LOCK_NB) on name. The lock belongs to the open file
// description, so a second open in the same process is refused too, and the kernel drops
// it when the process dies (kill -9 included): no stale lock files.
//
// A refusal is retried for up to lockPatience: when any goroutine of this process forks
// (os/exec) the child holds a copy of every descriptor until it execs, so a lock released
// a moment ago by Close can still look held.
func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockPatience)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // waiting out a fork, not synchronising
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, name)
		}
		return nil, fmt.Errorf("seglog: lock %s: %w", name, err)
	}
	return f, nil
}

const lockPatience = 100 * time.Millisecond
