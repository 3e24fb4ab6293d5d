// Package proxy is the small TCP proxy of the reconnect benchmark: it sits between a client
// and the broker, can hold back what the client sends (so messages stay in flight, written by
// the client but never seen by the broker) and can cut every connection at once.
package proxy

import (
	"errors"
	"net"
	"sync"
)

// Proxy forwards TCP connections from its loopback listener to a target address.
type Proxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	hold  bool
	pairs map[*pair]struct{}
	wg    sync.WaitGroup
}

// pair is one client connection and its connection to the target.
type pair struct {
	client, server net.Conn
	held           []byte // client bytes kept back while holding
}

// Start listens on a free loopback port and forwards every connection to target.
func Start(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{l: l, target: target, pairs: make(map[*pair]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the address clients dial.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pr := &pair{client: c, server: s}
		p.mu.Lock()
		p.pairs[pr] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.upstream(pr)
		go p.downstream(pr)
	}
}

// upstream copies client → server, or keeps the bytes while holding.
func (p *Proxy) upstream(pr *pair) {
	defer p.wg.Done()
	defer p.drop(pr)
	buf := make([]byte, 64<<10)
	for {
		n, err := pr.client.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if p.hold {
				pr.held = append(pr.held, buf[:n]...)
				p.mu.Unlock()
			} else {
				p.mu.Unlock()
				if _, werr := pr.server.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// downstream copies server → client.
func (p *Proxy) downstream(pr *pair) {
	defer p.wg.Done()
	defer p.drop(pr)
	buf := make([]byte, 64<<10)
	for {
		n, err := pr.server.Read(buf)
		if n > 0 {
			if _, werr := pr.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) drop(pr *pair) {
	pr.client.Close()
	pr.server.Close()
	p.mu.Lock()
	delete(p.pairs, pr)
	p.mu.Unlock()
}

// Hold makes the proxy keep back, from now on, everything clients send.
func (p *Proxy) Hold() {
	p.mu.Lock()
	p.hold = true
	p.mu.Unlock()
}

// HeldPublishes counts the complete PUBLISH packets held back so far, over all connections.
// Holding must have started between two packets.
func (p *Proxy) HeldPublishes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for pr := range p.pairs {
		n += countPublishes(pr.held)
	}
	return n
}

// countPublishes walks the MQTT fixed headers in b and counts whole PUBLISH packets.
func countPublishes(b []byte) int {
	n := 0
	for len(b) >= 2 {
		rl, shift, i := 0, 0, 1
		for ; i < len(b) && i <= 4; i++ {
			rl |= int(b[i]&0x7F) << shift
			shift += 7
			if b[i] < 0x80 {
				break
			}
		}
		if i >= len(b) || i > 4 {
			return n
		}
		end := i + 1 + rl
		if end > len(b) {
			return n
		}
		if b[0]>>4 == 3 {
			n++
		}
		b = b[end:]
	}
	return n
}

// Cut closes every connection, dropping what was held, and stops holding: clients that
// reconnect get a clean path to the target.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.hold = false
	pairs := make([]*pair, 0, len(p.pairs))
	for pr := range p.pairs {
		pairs = append(pairs, pr)
		pr.held = nil
	}
	p.mu.Unlock()
	for _, pr := range pairs {
		pr.client.Close()
		pr.server.Close()
	}
}

// Close stops listening, cuts every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	err := p.l.Close()
	p.Cut()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
