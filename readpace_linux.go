package tern

import (
	"net"
	"syscall"
)

// lowWaterSetter returns a function that sets nc's SO_RCVLOWAT and the highest mark it
// takes, or nil when nc is not a plain TCP connection. The highest mark is a quarter of the
// socket's receive buffer, so that the marks fit in the buffer as it is (Linux would grow a
// buffer it tunes itself for a larger mark, but not one a dialer fixed with SO_RCVBUF).
func lowWaterSetter(nc net.Conn) (func(int) error, int) {
	t, ok := nc.(*net.TCPConn)
	if !ok {
		return nil, 0
	}
	rc, err := t.SyscallConn()
	if err != nil {
		return nil, 0
	}
	var rcvbuf int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		rcvbuf, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || gerr != nil {
		return nil, 0
	}
	return func(v int) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = setLowWater(int(fd), v) }); err != nil {
			return err
		}
		return serr
	}, rcvbuf / 4
}

// setLowWater sets SO_RCVLOWAT on fd to v and keeps the connection's receive window clamp:
// when the buffer a mark needs exceeds the receive buffer, Linux grows the buffer and sets
// the clamp to the mark, which can lower it (after small packets the kernel counts more
// buffer per byte), and a lowered clamp would cap the window for the rest of the
// connection, long after the mark is off.
func setLowWater(fd, v int) error {
	before, cerr := syscall.GetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_WINDOW_CLAMP)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, v); err != nil {
		return err
	}
	if cerr != nil {
		return nil
	}
	if after, err := syscall.GetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_WINDOW_CLAMP); err == nil && after < before {
		return syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_WINDOW_CLAMP, before)
	}
	return nil
}
