package tern

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

// A QoS 1 PUBLISH that Mosquitto's ACL denies. Who closes the connection, and what the
// client does about it. Promise defended: a refusal completes the message (it is never
// resent), nothing acknowledged or in flight behind it is lost, and the dropped connection
// costs one reconnect, not a storm.
//
// Mosquitto 2.0.11 closes the connection by itself: the fault proxy's recording of the
// first connection reads, client to broker,
//
//	10 .. CONNECT, 32 0d 00 06 "deny/x" 00 01 00 "no"  (PUBLISH QoS 1, id 1)
//
// and nothing more; broker to client,
//
//	20 .. CONNACK, 40 03 00 01 87  (PUBACK id 1, 0x87 Not authorized)
//
// then end of stream, with no DISCONNECT either way. The broker logs "Denied PUBLISH",
// "Sending PUBACK ... rc135", then "Bad socket read/write on client ...": it sends the
// refusal and drops the client (the ACL error of its publish handler ends the client's
// read loop). The client sent no byte after its PUBLISH, so there is nothing to fix on the
// client's side of the wire; the test pins that and checks the client's answer.
func TestMosquittoACLDenyDropsConnection(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl")
	// Anonymous clients may use ok/# only.
	if err := os.WriteFile(acl, []byte("topic readwrite ok/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := brokertest.StartMosquitto(t, brokertest.Config{Extra: []string{"acl_file " + acl, "log_type all"}})
	brokerLogOnFailure(t, b)
	px := faultproxy.New(t, b.Addr)
	px.Record(true)
	life := newLifecycle()
	ctx := testCtx(t)
	sub := newTestClient(t, b.URL)
	okCh, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "ok/#", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, px.URL(), append(life.options(), fastReconnect())...)
	life.waitUp(t, 10*time.Second, "first connection")

	// 1. Alone in flight: the wire shows the broker closing on its own.
	err = c.Publish(ctx, PublishOptions{Topic: "deny/x", Payload: []byte("no"), QoS: 1})
	var rc *ReasonCodeError
	if !errors.As(err, &rc) || rc.Code != packet.NotAuthorized {
		t.Fatalf("denied publish: %v, want a 0x87 refusal", err)
	}
	life.waitDown(t, 10*time.Second, "after the refusal")
	life.waitUp(t, 10*time.Second, "reconnect after the refusal")
	var conn1 []string
	for _, w := range decodeRecording(px.Recording()) {
		if w.Conn == 1 {
			conn1 = append(conn1, fmt.Sprintf("%d:%v:%02x", w.Dir, w.Kind, byte(w.Code)))
		}
	}
	want := []string{
		fmt.Sprintf("%d:CONNECT:00", faultproxy.Up), fmt.Sprintf("%d:CONNACK:00", faultproxy.Down),
		fmt.Sprintf("%d:PUBLISH:00", faultproxy.Up), fmt.Sprintf("%d:PUBACK:87", faultproxy.Down),
	}
	if strings.Join(conn1, " ") != strings.Join(want, " ") {
		t.Fatalf("first connection carried %v, want %v", conn1, want)
	}
	if log := b.Log(); !strings.Contains(log, "rc135") || !strings.Contains(log, "Bad socket read/write") {
		t.Fatalf("broker log does not show the refusal and the drop:\n%s", tail(log, 2000))
	}

	// 2. Pipelined: the refusal completes its message; the messages behind it, which the
	// broker may never have read, are resent on the next connection and all arrive.
	deny, err := c.PublishAsync(ctx, PublishOptions{Topic: "deny/y", Payload: []byte("no"), QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	toks := make([]*PublishToken, n)
	for i := range toks {
		if toks[i], err = c.PublishAsync(ctx, PublishOptions{Topic: "ok/p", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := deny.Wait(ctx); !errors.As(err, &rc) || rc.Code != packet.NotAuthorized {
		t.Fatalf("pipelined denied publish: %v", err)
	}
	for i, tok := range toks {
		if err := tok.Wait(ctx); err != nil {
			t.Fatalf("message %d behind the refused one: %v", i, err)
		}
	}
	seen := make(map[string]bool)
	for len(seen) < n {
		seen[string(recv(t, okCh).Payload)] = true
	}

	// Each denied message crossed the wire once: a refusal is final.
	denied := 0
	for _, w := range decodeRecording(px.Recording()) {
		if w.Dir == faultproxy.Up && w.Kind == packet.PUBLISH && w.Payload == "no" {
			denied++
		}
	}
	if denied != 2 {
		t.Fatalf("denied messages sent %d times, want 2 (once each)", denied)
	}
	// One reconnect per refusal at most: no storm.
	if got := px.Accepted(); got > 3 {
		t.Fatalf("%d connections for 2 refusals", got)
	}
}
