package ws_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/ws"
)

// A handshake redirected by the server to another host must not take the user's headers
// there: WithHeader carries credentials (a token in a header of any name), and the host the
// redirect names is not the one the user configured. net/http drops only Authorization,
// Cookie and WWW-Authenticate on such a redirect. Promise: secrets never leave for a party
// the user did not name. A redirect to the same host keeps them (a path change).
func TestRedirectToOtherHostDropsHeaders(t *testing.T) {
	addr := mochi(t, nil)
	_, port, _ := net.SplitHostPort(addr)

	var mu sync.Mutex
	var seen []http.Header
	// The other host: 127.0.0.2, records what it is sent, refuses the upgrade.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no second loopback address: %v", err)
	}
	other := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		http.Error(w, "no", http.StatusForbidden)
	})}}
	other.Start()
	defer other.Close()

	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to := other.URL + "/mqtt"
		if r.URL.Path == "/same" {
			to = "http://127.0.0.1:" + port + "/mqtt" // the broker, on the same host
		}
		http.Redirect(w, r, to, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	rhost := strings.TrimPrefix(redirector.URL, "http://")

	tr := ws.New(ws.WithProxy(nil), ws.WithHeader(http.Header{"X-Api-Key": {"s3cret"}, "Authorization": {"Bearer t"}}))
	ctx := testCtx(t)
	c, err := tern.New(tern.WithBroker("ws://"+rhost+"/mqtt"), tern.WithTransport(tr))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err == nil {
		t.Fatal("connected through a host that refuses the upgrade")
	}
	c.Disconnect(ctx)
	mu.Lock()
	if len(seen) == 0 {
		mu.Unlock()
		t.Fatal("the redirect was not followed")
	}
	for _, h := range seen {
		for _, k := range []string{"X-Api-Key", "Authorization"} {
			if v := h.Get(k); v != "" {
				t.Errorf("redirect to another host carried %s: %q", k, v)
			}
		}
	}
	mu.Unlock()

	// Same host, another path and port: the headers stay, and the handshake succeeds.
	same := client(t, "ws://"+rhost+"/same", tern.WithTransport(tr))
	if err := same.Publish(ctx, tern.PublishOptions{Topic: "redir", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}
