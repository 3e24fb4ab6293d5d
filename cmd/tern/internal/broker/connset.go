package broker

import (
	"io"
	"sync"
)

// connSet holds the connections a listener handed to mochi, so that closing the listener
// closes every one of them (mochi's Close can miss one still before its CONNECT, and
// connections upgraded to WebSocket are no longer the HTTP server's to close). Once closed
// it takes no more. Safe for concurrent use.
type connSet struct {
	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	closed bool
}

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

// add registers c; false (and c not registered) once the set is closed.
func (s *connSet) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[io.Closer]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c io.Closer) {
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
	s.mu.Lock()
	s.closed = true
	conns := make([]io.Closer, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
