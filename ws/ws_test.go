package ws_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/ws"
)

// Over mochi's WebSocket listener, ws:// works through WithBroker like TCP: every QoS, a
// pipelined burst (several packets per frame) and a message larger than a frame buffer.
//
// The subscriber takes QoS 0: mochi v2.7.9 can deadlock routing QoS 1/2 messages to a client
// while that client's acknowledgements are processed (see TestCutAndResumeOverWebSocket).
// Receiving QoS 1 over WebSocket, resumes included, is covered there.
func TestMochiRoundTrip(t *testing.T) {
	addr := mochi(t, nil)
	url := "ws://" + addr + "/mqtt"
	ctx := testCtx(t)
	sub := client(t, url, tern.WithTransport(ws.New()))
	ch, _, err := sub.Subscribe(ctx, []tern.TopicFilter{{Topic: "ws/#"}}, tern.SubAutoAck(), tern.SubBuffer(2048))
	if err != nil {
		t.Fatal(err)
	}
	pub := client(t, url, tern.WithTransport(ws.New()))
	for qos := range byte(3) {
		if err := pub.Publish(ctx, tern.PublishOptions{Topic: "ws/q", QoS: qos, Payload: []byte{'0' + qos}}); err != nil {
			t.Fatal(err)
		}
		if m := recv(t, ch); string(m.Payload) != string('0'+rune(qos)) {
			t.Fatalf("QoS %d: got %q", qos, m.Payload)
		}
	}
	const n = 500
	toks := make([]*tern.PublishToken, 0, n)
	for i := range n {
		p := make([]byte, 4)
		binary.BigEndian.PutUint32(p, uint32(i))
		tok, err := pub.PublishAsync(ctx, tern.PublishOptions{Topic: "ws/burst", QoS: 1, Payload: p})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	for _, tok := range toks {
		select {
		case <-tok.Done():
		case <-ctx.Done():
			t.Fatal("burst not acknowledged in time")
		}
		if err := tok.Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		m := recv(t, ch)
		if got := binary.BigEndian.Uint32(m.Payload); got != uint32(i) {
			t.Fatalf("burst message %d carries %d", i, got)
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
	if err := pub.Publish(ctx, tern.PublishOptions{Topic: "ws/big", QoS: 1, Payload: big}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch); !bytes.Equal(m.Payload, big) {
		t.Fatalf("big message: %d bytes, want %d", len(m.Payload), len(big))
	}
}

// wss:// uses the client's TLS config with the server name taken from the URL's host: the
// certificate names only "localhost", and nothing in the configuration says so.
func TestMochiWSS(t *testing.T) {
	ca := newCA(t)
	addr := mochi(t, ca.server(t, []string{"localhost"}))
	_, port, _ := net.SplitHostPort(addr)
	ctx := testCtx(t)
	c := client(t, "wss://localhost:"+port+"/mqtt", tern.WithTransport(ws.New()),
		tern.WithTLSConfig(&tls.Config{RootCAs: ca.pool}))
	ch, _, err := c.Subscribe(ctx, []tern.TopicFilter{{Topic: "wss/x", QoS: 1}}, tern.SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, tern.PublishOptions{Topic: "wss/x", QoS: 1, Payload: []byte("secure")}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch); string(m.Payload) != "secure" {
		t.Fatalf("got %q", m.Payload)
	}
	// The same broker by IP: the certificate does not name it, so the handshake fails.
	bad, err := tern.New(tern.WithBroker("wss://"+addr+"/mqtt"), tern.WithTransport(ws.New()),
		tern.WithTLSConfig(&tls.Config{RootCAs: ca.pool}))
	if err != nil {
		t.Fatal(err)
	}
	var certErr *tls.CertificateVerificationError
	if err := bad.Connect(ctx); !errors.As(err, &certErr) {
		t.Fatalf("connect by IP to a certificate for localhost: %v, want a certificate error", err)
	}
	bad.Disconnect(ctx)
}

// An HTTP redirect of the wss handshake is verified against the host it leads to, and a
// redirect from wss to plain ws is refused.
func TestHTTPRedirectServerName(t *testing.T) {
	ca := newCA(t)
	addr := mochi(t, ca.server(t, []string{"localhost"}))
	_, port, _ := net.SplitHostPort(addr)
	target := "https://localhost:" + port + "/mqtt"
	redirector := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to := target
		if r.URL.Path == "/insecure" {
			to = "http://localhost:" + port + "/mqtt"
		}
		http.Redirect(w, r, to, http.StatusTemporaryRedirect)
	}))
	redirector.TLS = ca.server(t, nil, "127.0.0.1") // names only the IP
	redirector.StartTLS()
	defer redirector.Close()
	rhost := strings.TrimPrefix(redirector.URL, "https://")
	tlsCfg := &tls.Config{RootCAs: ca.pool}

	ctx := testCtx(t)
	c := client(t, "wss://"+rhost+"/mqtt", tern.WithTransport(ws.New()), tern.WithTLSConfig(tlsCfg))
	if err := c.Publish(ctx, tern.PublishOptions{Topic: "redir", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}

	down, err := tern.New(tern.WithBroker("wss://"+rhost+"/insecure"), tern.WithTransport(ws.New()), tern.WithTLSConfig(tlsCfg))
	if err != nil {
		t.Fatal(err)
	}
	if err := down.Connect(ctx); err == nil || !strings.Contains(err.Error(), "insecure URL refused") {
		t.Fatalf("redirect wss to ws: %v, want a refusal", err)
	}
	down.Disconnect(ctx)
}

// httpProxy is a forward proxy for tests: CONNECT tunnels (wss) and absolute-form requests
// (ws), which it forwards and then splices. It records each request's headers.
type httpProxy struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	seen []*http.Request
}

func newHTTPProxy(t *testing.T) *httpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &httpProxy{ln: ln}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *httpProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
		}()
	}
}

func (p *httpProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, req)
	p.mu.Unlock()
	up, err := net.Dial("tcp", req.Host)
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	if req.Method == http.MethodConnect {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n\r\n")
	} else if err := req.Write(up); err != nil { // origin form, headers kept
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, br)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, up)
	c.Close()
	up.Close()
	<-done
}

func (p *httpProxy) requests() []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*http.Request(nil), p.seen...)
}

// The handshake goes through the configured HTTP proxy, for ws:// as a forwarded request
// carrying the user's headers and the "mqtt" sub-protocol, for wss:// as a CONNECT tunnel.
func TestProxyAndHeaders(t *testing.T) {
	addr := mochi(t, nil)
	proxy := newHTTPProxy(t)
	proxyURL, _ := url.Parse("http://" + proxy.ln.Addr().String())
	tr := ws.New(ws.WithProxy(http.ProxyURL(proxyURL)), ws.WithHeader(http.Header{"X-Token": {"t0k"}}))
	ctx := testCtx(t)
	c := client(t, "ws://"+addr+"/mqtt", tern.WithTransport(tr))
	if err := c.Publish(ctx, tern.PublishOptions{Topic: "proxied", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	reqs := proxy.requests()
	if len(reqs) != 1 {
		t.Fatalf("proxy saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodGet || r.URL.Host != addr || r.Header.Get("X-Token") != "t0k" ||
		r.Header.Get("Sec-WebSocket-Protocol") != "mqtt" || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		t.Fatalf("proxied request %s %s headers %v", r.Method, r.URL, r.Header)
	}

	ca := newCA(t)
	saddr := mochi(t, ca.server(t, nil, "127.0.0.1"))
	s := client(t, "wss://"+saddr+"/mqtt", tern.WithTransport(tr), tern.WithTLSConfig(&tls.Config{RootCAs: ca.pool}))
	if err := s.Publish(ctx, tern.PublishOptions{Topic: "proxied", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	reqs = proxy.requests()
	if len(reqs) != 2 || reqs[1].Method != http.MethodConnect || reqs[1].Host != saddr {
		t.Fatalf("wss through the proxy: %d requests, last %s %s", len(reqs), reqs[len(reqs)-1].Method, reqs[len(reqs)-1].Host)
	}
}
