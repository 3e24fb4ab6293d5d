package tern

import (
	"net"
	"syscall"
	"testing"
)

// Raising the mark never lowers the connection's receive window clamp: Linux before 6.x
// set the clamp to the mark when the mark needed more buffer than the socket had. Where the
// kernel no longer does (checked first, on a socket of its own), the test has nothing to
// defend and skips.
func TestReadPacerKeepsWindowClamp(t *testing.T) {
	type sockopt struct{ level, name int }
	clampOpt := sockopt{syscall.IPPROTO_TCP, syscall.TCP_WINDOW_CLAMP}
	ctl := func(c net.Conn, f func(fd int) error) {
		t.Helper()
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var ferr error
		if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
			t.Fatal(err)
		}
		if ferr != nil {
			t.Fatal(ferr)
		}
	}
	get := func(c net.Conn, o sockopt) (v int) {
		ctl(c, func(fd int) (err error) { v, err = syscall.GetsockoptInt(fd, o.level, o.name); return err })
		return v
	}
	set := func(c net.Conn, o sockopt, v int) {
		ctl(c, func(fd int) error { return syscall.SetsockoptInt(fd, o.level, o.name, v) })
	}
	// A clamp well above what the socket's buffer holds now, as autotuning leaves it after
	// a large transfer; then a mark that needs more buffer than there is.
	const wide, mark = 4 << 20, 400_000
	probe, _ := tcpPair(t)
	set(probe, clampOpt, wide)
	set(probe, sockopt{syscall.SOL_SOCKET, syscall.SO_RCVLOWAT}, mark)
	if get(probe, clampOpt) >= wide {
		t.Skip("this kernel keeps the window clamp when SO_RCVLOWAT grows the buffer")
	}

	c, _ := tcpPair(t)
	p := startedPacer(t, c)
	set(c, clampOpt, wide)
	before := get(c, clampOpt)
	if err := p.setLW(mark); err != nil {
		t.Fatal(err)
	}
	if after := get(c, clampOpt); after < before {
		t.Fatalf("window clamp %d after raising the mark, %d before", after, before)
	}
}
