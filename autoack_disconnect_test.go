package tern

import (
	"testing"
	"time"

	"github.com/ternmq/tern/packet"
)

// An auto-acknowledged message that the application has received is acknowledged on the
// wire before the DISCONNECT of a Disconnect called right after receiving it: otherwise the
// session would send it again to the next connection. SubAutoAck promises the message is
// acknowledged "as soon as it enters the subscription's buffer".
func TestAutoAckBeforeImmediateDisconnect(t *testing.T) {
	p := newPeer(t)
	c, pc, _ := connectPeer(t, p, &packet.Connack{})
	ctx := testCtx(t)
	type subbed struct {
		ch  <-chan *Message
		err error
	}
	res := make(chan subbed, 1)
	go func() {
		ch, _, err := c.Subscribe(ctx, []TopicFilter{{Topic: "aa/#", QoS: 1}}, SubAutoAck())
		res <- subbed{ch, err}
	}()
	sub := pc.read().(*packet.Subscribe)
	pc.send(&packet.Suback{PacketID: sub.PacketID, ReasonCodes: []packet.ReasonCode{1}})
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	ch := r.ch
	pc.send(&packet.Publish{Topic: "aa/x", QoS: 1, PacketID: 9, Payload: []byte("m")})
	<-ch
	// The peer reads what follows and closes after DISCONNECT, as a broker does.
	order := make(chan string, 1)
	go func() {
		defer pc.nc.Close()
		for {
			pk, err := pc.tryRead(10 * time.Second)
			if err != nil {
				order <- "error: " + err.Error()
				return
			}
			switch pk := pk.(type) {
			case *packet.Ack:
				if pk.Kind == packet.PUBACK && pk.PacketID == 9 {
					order <- "PUBACK first"
					return
				}
			case *packet.Disconnect:
				order <- "DISCONNECT before the PUBACK of a message the application had received"
				return
			}
		}
	}()
	if err := c.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if got := <-order; got != "PUBACK first" {
		t.Fatal(got)
	}
}
