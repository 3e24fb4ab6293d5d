//go:build !unix

package seglog

import (
	"io"
	"os"
)

// syncDir is a no-op where directories cannot be opened for fsync (Windows); the file
// system there orders metadata updates itself.
func syncDir(string) error { return nil }

// lockFile only opens the lock file: without flock this stub does not keep a second
// process out. Windows support for exclusive locking is future work.
func lockFile(name string) (io.Closer, error) {
	return os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
}
