package broker

import (
	"net"
	"sync"
)

// connSet holds the connections a listener handed to mochi, so that closing the listener
// closes every one of them (mochi's Close can miss one still before its CONNECT, and
// connections upgraded to WebSocket are no longer the HTTP server's to close). Once closed
// it takes no more. Safe for concurrent use.
type connSet struct {
	mu     sync.Mutex
	conns  map[*handedConn]struct{}
	closed bool
}

// handedConn is a connection handed to mochi. mochi counts a new connection on its
// clients WaitGroup and then reads its CONNECT; its Close waits on that WaitGroup. A count
// that starts from zero while Close waits is a race (sync.WaitGroup's rule), so the
// listener's Close, which mochi calls before it waits, first waits until every connection
// it handed over has been counted: attached is closed on the first Read, which mochi makes
// only after counting, or when mochi gave the connection back.
type handedConn struct {
	net.Conn
	once     sync.Once
	attached chan struct{}
}

func (c *handedConn) Read(p []byte) (int, error) {
	c.markAttached()
	return c.Conn.Read(p)
}

func (c *handedConn) markAttached() { c.once.Do(func() { close(c.attached) }) }

// enter counts one more goroutine of the listener on wg, unless the set is closed: the
// listener's wait (wg.Wait) follows closeAll, so no goroutine is counted after it began.
func (s *connSet) enter(wg *sync.WaitGroup) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	wg.Add(1)
	return true
}

// add registers c and returns the connection to hand to mochi; nil (and c not
// registered) once the set is closed.
func (s *connSet) add(c net.Conn) *handedConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if s.conns == nil {
		s.conns = make(map[*handedConn]struct{})
	}
	h := &handedConn{Conn: c, attached: make(chan struct{})}
	s.conns[h] = struct{}{}
	return h
}

// remove unregisters c, which mochi gave back.
func (s *connSet) remove(c *handedConn) {
	c.markAttached()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// markClosed closes the set to new connections and reports whether it was closed already.
func (s *connSet) markClosed() (already bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	already, s.closed = s.closed, true
	return already
}

// closeAll closes the set and every connection in it.
func (s *connSet) closeAll() {
	for _, c := range s.snapshot(true) {
		c.Close()
	}
}

// awaitAttached waits until mochi has counted every connection in the set, or given it
// back. Only after markClosed: the set no longer grows, and mochi's first Read follows its
// count without waiting on anything.
func (s *connSet) awaitAttached() {
	for _, c := range s.snapshot(false) {
		<-c.attached
	}
}

func (s *connSet) snapshot(close bool) []*handedConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if close {
		s.closed = true
	}
	conns := make([]*handedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}
