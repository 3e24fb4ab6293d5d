package ws_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
	"github.com/ternmq/tern/ws"
)

// scriptedServer is a WebSocket peer for framing cases a real broker does not produce. Each
// accepted connection's WebSocket and the sub-protocols the client offered are sent on conns.
type scriptedServer struct {
	srv   *httptest.Server
	conns chan *peerWS
}

type peerWS struct {
	c       *websocket.Conn
	offered string
	done    chan struct{}
}

func newScriptedServer(t *testing.T) *scriptedServer {
	s := &scriptedServer{conns: make(chan *peerWS, 4)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			return
		}
		p := &peerWS{c: c, offered: r.Header.Get("Sec-WebSocket-Protocol"), done: make(chan struct{})}
		s.conns <- p
		<-p.done // the test drives the connection; the handler keeps it open until then
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scriptedServer) url() string {
	return strings.Replace(s.srv.URL, "http://", "ws://", 1) + "/mqtt"
}

func (s *scriptedServer) next(t *testing.T) *peerWS {
	t.Helper()
	select {
	case p := <-s.conns:
		t.Cleanup(func() { p.c.CloseNow(); close(p.done) })
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no WebSocket connection within 10s")
	}
	return nil
}

// readPacket reads whole binary messages until one MQTT packet is complete and decodes it.
// The client writes one message per batch, so a message holds whole packets.
func (p *peerWS) readPacket(t *testing.T, ctx context.Context) packet.Packet {
	t.Helper()
	typ, b, err := p.c.Read(ctx)
	if err != nil {
		t.Fatalf("peer read: %v", err)
	}
	// [MQTT-6.0.0-1] Control packets travel in binary frames.
	if typ != websocket.MessageBinary {
		t.Fatalf("client sent a %v frame", typ)
	}
	pkt, err := packet.DecodeBytes(b)
	if err != nil {
		t.Fatalf("peer decode %x: %v", b, err)
	}
	return pkt
}

func (p *peerWS) write(t *testing.T, ctx context.Context, typ websocket.MessageType, b []byte) {
	t.Helper()
	if err := p.c.Write(ctx, typ, b); err != nil {
		t.Fatalf("peer write: %v", err)
	}
}

// [MQTT-6.0.0-2] The receiver does not assume packets are aligned on frame boundaries: a
// CONNACK split over two frames, a SUBACK and a PUBLISH in one frame, and a PUBLISH split
// over three all arrive. [MQTT-6.0.0-3] The client offers the "mqtt" sub-protocol.
// [MQTT-6.0.0-1] A text frame closes the connection.
func TestFramesSplitAndPacked(t *testing.T) {
	s := newScriptedServer(t)
	ctx := testCtx(t)
	down := make(chan error, 4)
	c, err := tern.New(tern.WithBroker(s.url()), tern.WithTransport(ws.New()),
		tern.WithReconnectBackoff(tern.ConstantBackoff(time.Hour)),
		tern.WithOnConnectionDown(func(err error) bool { down <- err; return true }))
	if err != nil {
		t.Fatal(err)
	}
	connected := make(chan error, 1)
	go func() { connected <- c.Connect(ctx) }()
	p := s.next(t)
	if p.offered != "mqtt" {
		t.Fatalf("client offered sub-protocols %q, want mqtt", p.offered)
	}
	if _, ok := p.readPacket(t, ctx).(*packet.Connect); !ok {
		t.Fatal("first packet is not CONNECT")
	}
	connack := (&packet.Connack{}).AppendTo(nil)
	p.write(t, ctx, websocket.MessageBinary, connack[:1])
	p.write(t, ctx, websocket.MessageBinary, connack[1:])
	if err := <-connected; err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())

	type subResult struct {
		ch  <-chan *tern.Message
		err error
	}
	subscribed := make(chan subResult, 1)
	go func() {
		ch, _, err := c.Subscribe(ctx, []tern.TopicFilter{{Topic: "f/#"}}, tern.SubAutoAck())
		subscribed <- subResult{ch, err}
	}()
	sub, ok := p.readPacket(t, ctx).(*packet.Subscribe)
	if !ok {
		t.Fatal("expected SUBSCRIBE")
	}
	packed := (&packet.Suback{PacketID: sub.PacketID, ReasonCodes: []packet.ReasonCode{0}}).AppendTo(nil)
	packed = (&packet.Publish{Topic: "f/one", Payload: []byte("packed")}).AppendTo(packed)
	p.write(t, ctx, websocket.MessageBinary, packed)
	r := <-subscribed
	if r.err != nil {
		t.Fatal(r.err)
	}
	split := (&packet.Publish{Topic: "f/two", Payload: []byte("split over three frames")}).AppendTo(nil)
	for _, part := range [][]byte{split[:3], split[3:10], split[10:]} {
		p.write(t, ctx, websocket.MessageBinary, part)
	}
	for _, want := range []string{"packed", "split over three frames"} {
		if m := recv(t, r.ch); string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
	}

	p.write(t, ctx, websocket.MessageText, (&packet.Publish{Topic: "f/text", Payload: []byte("x")}).AppendTo(nil))
	// The client closes with 1003 (unsupported data); reading answers its close frame.
	if _, _, err := p.c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusUnsupportedData {
		t.Fatalf("after a text frame the peer read %v, want a close with status 1003", err)
	}
	select {
	case err := <-down:
		if err == nil {
			t.Fatal("connection down without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a text frame did not end the connection")
	}
	select {
	case m := <-r.ch:
		t.Fatalf("message %q from a text frame was delivered", m.Payload)
	default:
	}
}

// A broker that refuses the upgrade is reported with its HTTP status.
func TestHandshakeRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	c, err := tern.New(tern.WithBroker(strings.Replace(srv.URL, "http://", "ws://", 1)+"/mqtt"), tern.WithTransport(ws.New()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	err = c.Connect(ctx)
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("connect: %v, want the HTTP status", err)
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("refusal reported as a timeout: %v", err)
	}
	c.Disconnect(ctx)
}
