package tern

import (
	"net"
	"syscall"
)

// lowWaterSetter returns a function that sets nc's SO_RCVLOWAT, or nil when nc is not a
// plain TCP connection.
func lowWaterSetter(nc net.Conn) func(int) error {
	t, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := t.SyscallConn()
	if err != nil {
		return nil
	}
	return func(v int) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, v)
		}); err != nil {
			return err
		}
		return serr
	}
}
