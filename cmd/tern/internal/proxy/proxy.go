// Package proxy is the tern command's former TCP proxy, now a thin wrapper over
// github.com/ternmq/tern/internal/faultproxy, the repository's one proxy. It keeps the old
// API for code written against it; new code uses faultproxy directly. Deprecated: switch to
// faultproxy (Start, Cut, Refuse, Close); this package will be removed.
package proxy

import "github.com/ternmq/tern/internal/faultproxy"

// Proxy forwards each connection accepted on its address to a target address.
type Proxy struct{ p *faultproxy.Proxy }

// Start listens on listen (a loopback host:port; port 0 picks a free one) and forwards to
// target.
func Start(listen, target string) (*Proxy, error) {
	p, err := faultproxy.Start(listen, target)
	if err != nil {
		return nil, err
	}
	return &Proxy{p}, nil
}

// Addr returns the address clients connect to, host:port.
func (p *Proxy) Addr() string { return p.p.Addr() }

// Cut closes every live connection now and returns how many there were.
func (p *Proxy) Cut() int { return p.p.Cut() }

// Pause makes the proxy close each new connection at once, until Resume.
func (p *Proxy) Pause() { p.p.Refuse(true) }

// Resume undoes Pause.
func (p *Proxy) Resume() { p.p.Refuse(false) }

// Close stops accepting, closes every connection and waits for all goroutines.
func (p *Proxy) Close() error {
	p.p.Close()
	return nil
}
