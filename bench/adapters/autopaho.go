package adapters

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/autopaho/queue"
	"github.com/eclipse/paho.golang/autopaho/queue/file"
	"github.com/eclipse/paho.golang/autopaho/queue/memory"
	"github.com/eclipse/paho.golang/paho"
)

// Autopaho adapts github.com/eclipse/paho.golang/autopaho (MQTT 5). Its Publish is
// synchronous and it has no asynchronous form with a completion, so pipelining uses
// goroutines (see Pipelined).
type Autopaho struct {
	cfg    Config
	cm     *autopaho.ConnectionManager
	cancel context.CancelFunc

	handler  atomic.Pointer[func(paho.PublishReceived) (bool, error)]
	consumer consumer // Channel mode
}

// Connect implements Client.
func (a *Autopaho) Connect(ctx context.Context) error {
	u, err := url.Parse("mqtt://" + a.cfg.Addr)
	if err != nil {
		return err
	}
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     60,
		CleanStartOnInitialConnection: !a.cfg.Resume,
		ConnectTimeout:                10 * time.Second,
		// The same reconnect policy as every library here: at once, then every 100 ms.
		ReconnectBackoff: func(attempt int) time.Duration {
			if attempt == 0 {
				return 0
			}
			return 100 * time.Millisecond
		},
		ClientConfig: paho.ClientConfig{
			ClientID: a.cfg.ClientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) {
					if h := a.handler.Load(); h != nil {
						return (*h)(pr)
					}
					return false, nil
				},
			},
		},
	}
	if a.cfg.Session {
		cfg.SessionExpiryInterval = 3600
	}
	if rm := a.cfg.ReceiveMax; rm > 0 {
		cfg.ConnectPacketBuilder = func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &rm
			return cp, nil
		}
	}
	var q queue.Queue
	switch a.cfg.Queue {
	case "":
	case "memory":
		q = memory.New()
	case "file":
		if q, err = file.New(a.cfg.QueueDir, "q", ".msg"); err != nil {
			return err
		}
	default:
		return fmt.Errorf("autopaho: unknown queue %q", a.cfg.Queue)
	}
	cfg.Queue = q
	// The connection lives until Disconnect, not until ctx ends.
	life, cancel := context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(life, cfg)
	if err != nil {
		cancel()
		return err
	}
	if err := cm.AwaitConnection(ctx); err != nil {
		cancel()
		return err
	}
	a.cm, a.cancel = cm, cancel
	return nil
}

// Publish implements Client.
func (a *Autopaho) Publish(ctx context.Context, qos byte, payload []byte) error {
	_, err := a.cm.Publish(ctx, &paho.Publish{QoS: qos, Topic: a.cfg.Topic, Payload: payload})
	return err
}

// Subscribe implements Client. The library acknowledges a message when its handler returns;
// in channel mode that is once the message is in the channel.
func (a *Autopaho) Subscribe(ctx context.Context, qos byte, mode Mode, h func([]byte)) error {
	if err := a.setHandler(mode, h); err != nil {
		return err
	}
	return a.subscribe(ctx, qos)
}

// SubscribeConnect implements Drainer: the handler is in place before the connection.
func (a *Autopaho) SubscribeConnect(ctx context.Context, qos byte, mode Mode, h func([]byte)) error {
	if err := a.setHandler(mode, h); err != nil {
		return err
	}
	if err := a.Connect(ctx); err != nil {
		return err
	}
	return a.subscribe(ctx, qos)
}

func (a *Autopaho) subscribe(ctx context.Context, qos byte) error {
	_, err := a.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: a.cfg.Topic, QoS: qos}}})
	return err
}

func (a *Autopaho) setHandler(mode Mode, h func([]byte)) error {
	var fn func(paho.PublishReceived) (bool, error)
	switch mode {
	case Callback:
		fn = func(pr paho.PublishReceived) (bool, error) {
			h(pr.Packet.Payload)
			return true, nil
		}
	case Channel:
		send := a.consumer.start(h)
		fn = func(pr paho.PublishReceived) (bool, error) {
			send(pr.Packet.Payload) // a fresh slice per message: safe to hand over
			return true, nil
		}
	default:
		return fmt.Errorf("autopaho: unknown mode %q", mode)
	}
	a.handler.Store(&fn)
	return nil
}

// Enqueue implements Enqueuer through PublishViaQueue.
func (a *Autopaho) Enqueue(ctx context.Context, payload []byte) error {
	if a.cfg.Queue == "" {
		return errors.New("autopaho: no queue configured")
	}
	return a.cm.PublishViaQueue(ctx, &autopaho.QueuePublish{Publish: &paho.Publish{QoS: 1, Topic: a.cfg.Topic, Payload: payload}})
}

// Disconnect implements Client.
func (a *Autopaho) Disconnect(ctx context.Context) error {
	if a.cm == nil {
		return nil
	}
	err := a.cm.Disconnect(ctx)
	a.cancel()
	a.consumer.stop()
	return err
}
