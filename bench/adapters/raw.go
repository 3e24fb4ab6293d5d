package adapters

import (
	"context"
	"errors"
	"sync"

	"github.com/ternmq/tern/bench/rawmqtt"
	"github.com/ternmq/tern/packet"
)

// Raw adapts the neutral load client of package rawmqtt, the "physical limit" row: it
// writes pre-encoded packets in large batches and pipelines everything it publishes.
type Raw struct {
	cfg  Config
	mu   sync.Mutex // one publisher at a time: Publish from several goroutines takes turns
	c    *rawmqtt.Client
	tmpl *rawmqtt.Template // for Publish: rebuilt when the QoS or size changes
	qos  byte
	cur  []byte // the payload Publish is sending
	copy func(int, []byte)
}

// Connect implements Client.
func (a *Raw) Connect(ctx context.Context) error {
	c, err := rawmqtt.Dial(ctx, a.cfg.Addr, rawmqtt.Options{ClientID: a.cfg.ClientID, ReceiveMax: a.cfg.ReceiveMax})
	if err != nil {
		return err
	}
	a.c = c
	a.copy = func(_ int, dst []byte) { copy(dst, a.cur) }
	return nil
}

// Publish implements Client: one message through the pipelined path.
func (a *Raw) Publish(ctx context.Context, qos byte, payload []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tmpl == nil || a.qos != qos || len(a.cur) != len(payload) {
		a.tmpl, a.qos = rawmqtt.NewTemplate(a.cfg.Topic, qos, payload), qos
	}
	a.cur = payload
	return a.c.Publish(ctx, a.tmpl, 1, a.copy)
}

// PublishPipelined implements Pipeliner: the whole window in flight, batched writes.
func (a *Raw) PublishPipelined(ctx context.Context, qos byte, n int, src Payloads) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := rawmqtt.NewTemplate(a.cfg.Topic, qos, src.New())
	return a.c.Publish(ctx, t, n, func(i int, p []byte) { src.Stamp(p, i) })
}

// Subscribe implements Client. Messages are handled on the read goroutine whatever the mode.
func (a *Raw) Subscribe(ctx context.Context, qos byte, mode Mode, h func([]byte)) error {
	a.c.OnMessage(func(p *packet.Publish) { h(p.Payload) })
	return a.c.Subscribe(ctx, a.cfg.Topic, qos)
}

// Disconnect implements Client.
func (a *Raw) Disconnect(ctx context.Context) error {
	if a.c == nil {
		return errors.New("raw: not connected")
	}
	return a.c.Close()
}
