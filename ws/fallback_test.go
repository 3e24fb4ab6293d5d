package ws_test

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
	"github.com/ternmq/tern/ws"
)

// MQTT5Fallback311 over WebSocket: a 3.1.1-only broker that ends the WebSocket on a level-5
// CONNECT (with a close frame, or by dropping the TCP connection without one) is a broker
// that refused level 5, as over TCP ("5, falling back to 3.1.1 when the broker ... closes
// on a level-5 CONNECT").
func TestFallback311OverWebSocket(t *testing.T) {
	refusals := map[string]func(p *peerWS){
		"close-frame": func(p *peerWS) { p.c.Close(websocket.StatusProtocolError, "level 4 only") },
		"drop":        func(p *peerWS) { p.c.CloseNow() },
	}
	for name, refuse := range refusals {
		t.Run(name, func(t *testing.T) {
			s := newScriptedServer(t)
			ctx := testCtx(t)
			c, err := tern.New(tern.WithBroker(s.url()), tern.WithTransport(ws.New()),
				tern.WithProtocol(tern.MQTT5Fallback311),
				tern.WithReconnectBackoff(tern.ConstantBackoff(time.Hour)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Disconnect(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- c.Connect(ctx) }()
			p := s.next(t)
			if _, _, err := p.c.Read(ctx); err != nil {
				t.Fatalf("first CONNECT: %v", err)
			}
			refuse(p)
			// A close is taken for a refusal of level 5 when it happens twice in a row.
			next := func() *peerWS {
				select {
				case err := <-errc:
					t.Fatalf("Connect ended without a 3.1.1 attempt: %v", err)
				case p := <-s.conns:
					t.Cleanup(func() { p.c.CloseNow(); close(p.done) })
					return p
				case <-time.After(10 * time.Second):
					t.Fatal("no next connection within 10s")
				}
				return nil
			}
			p = next()
			typ, b, err := p.c.Read(ctx)
			if err != nil || typ != websocket.MessageBinary || len(b) < 9 || b[8] != packet.Version5 {
				t.Fatalf("second CONNECT %x (%v), want level 5 again", b, err)
			}
			refuse(p)
			p = next()
			typ, b, err = p.c.Read(ctx)
			if err != nil || typ != websocket.MessageBinary {
				t.Fatalf("second CONNECT: %v", err)
			}
			// Level byte of a CONNECT: after the fixed header (2 bytes here) and "MQTT".
			if len(b) < 9 || b[8] != packet.Version311 {
				t.Fatalf("second CONNECT %x, want level 4", b)
			}
			p.write(t, ctx, websocket.MessageBinary, []byte{0x20, 2, 0, 0})
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if v := c.Info().Version; v != packet.Version311 {
				t.Fatalf("Info().Version = %d, want 4", v)
			}
		})
	}
}
