//go:build linux

package brokertest

import "syscall"

// sysProcAttr asks the kernel to kill the broker if the test binary dies without running its
// cleanups (a panic in another goroutine, a -timeout, a kill -9), so no broker outlives its
// test. Strictly the signal follows the death of the thread that started the broker; Go keeps
// its threads alive unless a goroutine locked to one exits, which these tests do not do.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
