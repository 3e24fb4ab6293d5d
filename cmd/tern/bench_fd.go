//go:build unix

package main

import (
	"fmt"
	"syscall"
)

// checkFDLimit fails, before anything starts, when this process may not open need file
// descriptors (each connection takes one). Go raises the soft limit to the hard one at
// start, so what is left is the hard limit: raise it with ulimit -n (or limits.conf /
// systemd's LimitNOFILE). It returns the limit.
func checkFDLimit(need uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, nil // unknown: let the connections tell
	}
	if need > lim.Cur {
		return lim.Cur, fmt.Errorf("%w: this run needs about %d file descriptors (one per connection, plus some), the limit is %d: raise it with ulimit -n %d",
			errFDLimit, need, lim.Cur, need)
	}
	return lim.Cur, nil
}
