// Package proxy is a TCP proxy that cuts its connections on demand, used by the tern
// command to break a client's connection to a broker while the broker stays up.
package proxy

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// dialTimeout bounds the connection to the target; Close aborts it sooner.
const dialTimeout = 5 * time.Second

// Proxy forwards each connection accepted on its address to a target address. Its methods
// are safe for concurrent use; Close waits for every goroutine it started.
type Proxy struct {
	ln     net.Listener
	target string
	ctx    context.Context // ends at Close, aborting dials
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	links  map[*link]struct{}
	paused bool
	closed bool
}

// link is one proxied connection: the accepted client side and the dialled target side.
type link struct {
	client, server net.Conn
	once           sync.Once
}

func (l *link) close() {
	l.once.Do(func() {
		l.client.Close()
		l.server.Close()
	})
}

// Start listens on listen (host:port; port 0 picks a free one) and forwards to target.
func Start(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{ln: ln, target: target, ctx: ctx, cancel: cancel, links: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the address clients connect to, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve dials the target for one client and pumps bytes both ways until either side ends
// or the link is cut. A target that refuses is answered by closing the client.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	if paused {
		c.Close()
		return
	}
	d := net.Dialer{Timeout: dialTimeout}
	s, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	l := &link{client: c, server: s}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	done := make(chan struct{})
	go func() {
		io.Copy(s, c)
		l.close()
		close(done)
	}()
	io.Copy(c, s)
	l.close()
	<-done
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// Cut closes every live connection now, both sides, and returns how many there were. New
// connections are accepted as before.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
		delete(p.links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	return len(links)
}

// Pause makes the proxy close each new connection at once, as a target that is down would,
// until Resume. Live connections are left alone.
func (p *Proxy) Pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Resume undoes Pause.
func (p *Proxy) Resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// Close stops accepting, closes every connection and waits for all goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.cancel()
	p.Cut()
	p.wg.Wait()
	return err
}
