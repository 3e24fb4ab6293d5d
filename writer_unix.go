//go:build unix

package tern

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// rawWriter makes non-blocking writes on a TCP or Unix socket, for the writer's inline path
// (writer.writeInline): one write(2) that takes what the socket buffer has room for and
// never waits. Other connections (TLS, WebSocket, wrapped or custom ones) have none, and
// every write goes through the writer's loop. The function handed to the runtime is made
// once, so a write allocates nothing. Only the writer's current write holder uses it.
type rawWriter struct {
	rc  syscall.RawConn
	net string // "tcp" or "unix", for errors
	fn  func(fd uintptr) bool
	b   []byte
	n   int
	err error
}

// newTryWriter returns the non-blocking writer of c, or nil if c is not a plain socket.
func newTryWriter(c net.Conn) tryWriter {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawWriter{rc: rc, net: c.LocalAddr().Network()}
	r.fn = r.write
	return r
}

// write is one attempt on the descriptor; it reports done, so the runtime never waits.
func (r *rawWriter) write(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), r.b)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN || err == syscall.EWOULDBLOCK {
			n, err = 0, nil
		}
		r.n, r.err = max(n, 0), err
		return true
	}
}

// tryWrite writes what the socket takes of b now and returns how much that was. n < len(b)
// with a nil error means the socket buffer is full: the rest must be written by a write
// that may wait.
func (r *rawWriter) tryWrite(b []byte) (int, error) {
	r.b = b
	err := r.rc.Write(r.fn)
	r.b = nil
	if err != nil {
		return 0, err // closed
	}
	if r.err != nil {
		err := r.err
		r.err = nil
		if errors.Is(err, syscall.EBADF) {
			return 0, net.ErrClosed
		}
		return r.n, &net.OpError{Op: "write", Net: r.net, Err: os.NewSyscallError("write", err)}
	}
	return r.n, nil
}
