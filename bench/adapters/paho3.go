package adapters

import (
	"context"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Paho3 adapts github.com/eclipse/paho.mqtt.golang, which speaks MQTT 3.1.1: it has no
// Receive Maximum (the broker's max_inflight_messages still bounds what it sends this
// client). Its Publish returns a token at once, so it pipelines natively.
type Paho3 struct {
	cfg      Config
	c        mqtt.Client
	consumer consumer // Channel mode
}

// Connect implements Client.
func (a *Paho3) Connect(ctx context.Context) error {
	o := mqtt.NewClientOptions().
		AddBroker("tcp://" + a.cfg.Addr).
		SetClientID(a.cfg.ClientID).
		SetProtocolVersion(4).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetCleanSession(!a.cfg.Session).
		// The library retries a lost connection at once, then backs off from one second;
		// MaxReconnectInterval caps that.
		SetAutoReconnect(a.cfg.Session).
		SetMaxReconnectInterval(100 * time.Millisecond)
	c := mqtt.NewClient(o)
	if err := wait(ctx, c.Connect()); err != nil {
		return err
	}
	a.c = c
	return nil
}

// wait waits for a token, bounded by ctx.
func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Publish implements Client.
func (a *Paho3) Publish(ctx context.Context, qos byte, payload []byte) error {
	return wait(ctx, a.c.Publish(a.cfg.Topic, qos, false, payload))
}

// pahoWindow is how many publishes PublishPipelined keeps outstanding: the library has no
// flow control of its own, so it gets the same window the broker grants MQTT 5 clients.
const pahoWindow = 20

// PublishPipelined implements Pipeliner with the token-based Publish. The library keeps a
// reference to the payload until the message is acknowledged, so each slot of the window
// has its own buffer.
func (a *Paho3) PublishPipelined(ctx context.Context, qos byte, n int, src Payloads) error {
	var toks [pahoWindow]mqtt.Token
	var bufs [pahoWindow][]byte
	for i := range n {
		s := i % pahoWindow
		if toks[s] != nil {
			if err := wait(ctx, toks[s]); err != nil {
				return fmt.Errorf("message %d: %w", i-pahoWindow, err)
			}
		}
		if bufs[s] == nil {
			bufs[s] = src.New()
		}
		src.Stamp(bufs[s], i)
		toks[s] = a.c.Publish(a.cfg.Topic, qos, false, bufs[s])
	}
	for _, t := range toks {
		if t != nil {
			if err := wait(ctx, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// Subscribe implements Client. With the default OrderMatters the handler runs on the
// library's router goroutine and the message is acknowledged when it returns.
func (a *Paho3) Subscribe(ctx context.Context, qos byte, mode Mode, h func([]byte)) error {
	var fn mqtt.MessageHandler
	switch mode {
	case Callback:
		fn = func(_ mqtt.Client, m mqtt.Message) { h(m.Payload()) }
	case Channel:
		send := a.consumer.start(h)
		fn = func(_ mqtt.Client, m mqtt.Message) {
			send(m.Payload()) // the message owns its payload
		}
	default:
		return fmt.Errorf("paho3: unknown mode %q", mode)
	}
	return wait(ctx, a.c.Subscribe(a.cfg.Topic, qos, fn))
}

// Disconnect implements Client.
func (a *Paho3) Disconnect(ctx context.Context) error {
	if a.c == nil {
		return nil
	}
	var quiesce uint = 1000
	if dl, ok := ctx.Deadline(); ok {
		quiesce = uint(max(time.Until(dl), 0) / time.Millisecond)
	}
	a.c.Disconnect(quiesce)
	a.consumer.stop()
	return nil
}
