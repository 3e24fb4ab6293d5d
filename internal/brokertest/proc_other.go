//go:build !linux

package brokertest

import "syscall"

// sysProcAttr returns nil: only Linux can tie the broker's life to the test binary's.
func sysProcAttr() *syscall.SysProcAttr { return nil }
