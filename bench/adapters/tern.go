package adapters

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/filequeue"
	"github.com/ternmq/tern/filestore"
	"github.com/ternmq/tern/ws"
)

// Tern adapts github.com/ternmq/tern.
type Tern struct {
	cfg Config
	c   *tern.Client
	q   tern.PublisherQueue
	qp  *tern.QueuePublisher
	// store is the filestore of Config.Store "file", closed by Disconnect.
	store *filestore.Store
	wg    sync.WaitGroup // channel consumers

	// With Queue "file-async", Enqueue uses PublishAsync; a goroutine waits for the tokens
	// and keeps the first error for Disconnect.
	toks   chan *tern.QueueToken
	tokErr error
	tokWG  sync.WaitGroup
}

// immediateFirst retries at once, then every 100 ms: the reconnect policy given to every
// library in the benchmarks.
type immediateFirst struct{}

func (immediateFirst) Delay(attempt int) time.Duration {
	if attempt <= 1 {
		return 0
	}
	return 100 * time.Millisecond
}

// Connect implements Client.
func (a *Tern) Connect(ctx context.Context) error {
	c, err := a.newClient()
	if err != nil {
		return err
	}
	return a.connect(ctx, c)
}

func (a *Tern) newClient() (*tern.Client, error) {
	opts := []tern.Option{
		tern.WithBroker("mqtt://" + a.cfg.Addr),
		tern.WithClientID(a.cfg.ClientID),
	}
	if a.cfg.WS {
		opts = []tern.Option{
			tern.WithBroker("ws://" + a.cfg.Addr + "/mqtt"),
			tern.WithClientID(a.cfg.ClientID),
			tern.WithTransport(ws.New()),
		}
	}
	if a.cfg.ReceiveMax > 0 {
		opts = append(opts, tern.WithReceiveMaximum(a.cfg.ReceiveMax))
	}
	if a.cfg.Session {
		opts = append(opts, tern.WithSessionExpiry(time.Hour), tern.WithReconnectBackoff(immediateFirst{}))
	}
	if a.cfg.Resume {
		opts = append(opts, tern.WithCleanStart(false))
	}
	if a.cfg.V311 {
		opts = append(opts, tern.WithProtocol(tern.MQTT311))
	}
	if a.cfg.Pool > 1 {
		opts = append(opts, tern.WithPublisherPool(a.cfg.Pool))
	}
	switch a.cfg.Store {
	case "":
	case "memory":
		opts = append(opts, tern.WithStore(tern.NewMemoryStore()))
	case "file":
		st, err := filestore.Open(a.cfg.StoreDir)
		if err != nil {
			return nil, err
		}
		a.store = st
		opts = append(opts, tern.WithStore(st))
	default:
		return nil, fmt.Errorf("tern: unknown store %q", a.cfg.Store)
	}
	c, err := tern.New(opts...)
	if err != nil && a.store != nil {
		a.store.Close()
		a.store = nil
	}
	return c, err
}

func (a *Tern) connect(ctx context.Context, c *tern.Client) error {
	if err := c.Connect(ctx); err != nil {
		if a.store != nil {
			a.store.Close()
			a.store = nil
		}
		return err
	}
	a.c = c
	var err error
	switch a.cfg.Queue {
	case "":
		return nil
	case "memory":
		a.q = tern.NewMemoryQueue()
	case "file", "file-async":
		// Default options: group commit, the queue's documented default sync policy.
		if a.q, err = filequeue.Open(a.cfg.QueueDir); err != nil {
			return err
		}
		if a.cfg.Queue == "file-async" {
			a.toks = make(chan *tern.QueueToken, 1<<16)
			a.tokWG.Add(1)
			go func() {
				defer a.tokWG.Done()
				for tok := range a.toks {
					if err := tok.Wait(context.Background()); err != nil && a.tokErr == nil {
						a.tokErr = err
					}
				}
			}()
		}
	default:
		return fmt.Errorf("tern: unknown queue %q", a.cfg.Queue)
	}
	a.qp, err = tern.NewQueuePublisher(c, a.q)
	return err
}

// Publish implements Client.
func (a *Tern) Publish(ctx context.Context, qos byte, payload []byte) error {
	return a.c.Publish(ctx, tern.PublishOptions{Topic: a.cfg.Topic, Payload: payload, QoS: qos})
}

// PublishPipelined implements Pipeliner with PublishAsync: it returns as soon as the message
// holds a place in the broker's window, so one goroutine keeps the window full.
func (a *Tern) PublishPipelined(ctx context.Context, qos byte, n int, src Payloads) error {
	buf := src.New() // PublishAsync copies the payload
	var ring [256]*tern.PublishToken
	for i := range n {
		src.Stamp(buf, i)
		tok, err := a.c.PublishAsync(ctx, tern.PublishOptions{Topic: a.cfg.Topic, Payload: buf, QoS: qos})
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		slot := &ring[i%len(ring)]
		if *slot != nil {
			if err := (*slot).Wait(ctx); err != nil {
				return fmt.Errorf("message %d: %w", i-len(ring), err)
			}
		}
		*slot = tok
	}
	for _, tok := range ring {
		if tok != nil {
			if err := tok.Wait(ctx); err != nil {
				return err
			}
		}
	}
	if qos == 0 {
		return a.c.Flush(ctx)
	}
	return nil
}

// Subscribe implements Client.
func (a *Tern) Subscribe(ctx context.Context, qos byte, mode Mode, h func([]byte)) error {
	filters := []tern.TopicFilter{{Topic: a.cfg.Topic, QoS: qos}}
	var opts []tern.SubOption
	if a.cfg.ZeroCopy {
		opts = append(opts, tern.SubZeroCopy())
	}
	if a.cfg.Inline && mode == Callback {
		opts = append(opts, tern.SubInline())
	}
	switch mode {
	case Callback:
		_, err := a.c.SubscribeCallback(ctx, filters, func(m *tern.Message) { h(m.Payload) }, opts...)
		return err
	case Channel:
		ch, _, err := a.c.Subscribe(ctx, filters, opts...)
		if err != nil {
			return err
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for m := range ch {
				h(m.Payload)
				m.Ack()
			}
		}()
		return nil
	}
	return fmt.Errorf("tern: unknown mode %q", mode)
}

// SubscribeConnect implements Drainer: tern routes a subscription made before Connect at
// once, so the resumed session's messages reach it.
func (a *Tern) SubscribeConnect(ctx context.Context, qos byte, mode Mode, h func([]byte)) error {
	c, err := a.newClient()
	if err != nil {
		return err
	}
	a.c = c
	if err := a.Subscribe(ctx, qos, mode, h); err != nil {
		return err
	}
	return a.connect(ctx, c)
}

// Enqueue implements Enqueuer.
// With Queue "file-async" it returns once the queue has taken the message (PublishAsync),
// before it is synced; storage errors are reported by Disconnect.
func (a *Tern) Enqueue(ctx context.Context, payload []byte) error {
	m := tern.PublishOptions{Topic: a.cfg.Topic, Payload: payload, QoS: 1}
	if a.toks == nil {
		return a.qp.Publish(ctx, m)
	}
	tok, err := a.qp.PublishAsync(ctx, m)
	if err != nil {
		return err
	}
	select {
	case a.toks <- tok:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Disconnect implements Client.
func (a *Tern) Disconnect(ctx context.Context) error {
	var errs []error
	if a.toks != nil {
		close(a.toks)
		a.tokWG.Wait()
		errs = append(errs, a.tokErr)
	}
	if a.qp != nil {
		errs = append(errs, a.qp.Close(ctx), a.q.Close())
	}
	if a.c != nil {
		errs = append(errs, a.c.Disconnect(ctx))
	}
	a.wg.Wait() // the channel closes on Disconnect
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	return errors.Join(errs...)
}
