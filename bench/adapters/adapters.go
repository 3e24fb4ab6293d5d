// Package adapters gives every MQTT client library of the side-by-side benchmarks the same
// small surface: connect, publish (synchronous, and pipelined where the library has an
// asynchronous form), subscribe with a callback or a channel, disconnect. An adapter only
// translates calls; it adds no buffering, batching or threads of its own beyond what the
// library's own API makes the caller write.
package adapters

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Config is what every adapter needs to know.
type Config struct {
	Addr       string // host:port of the broker (or of a proxy in front of it)
	ClientID   string
	Topic      string // published to and subscribed to
	ReceiveMax uint16 // advertised by MQTT 5 clients; 0 leaves the library's default

	// Session keeps the session on the broker (expiry one hour, no clean start after the
	// first connection) and makes the library reconnect at once after a lost connection, the
	// same policy for every library: first retry immediately, later ones after 100 ms.
	Session bool
	// ZeroCopy makes tern receive with SubZeroCopy (no copy of each message).
	ZeroCopy bool
	// Inline makes tern's callback subscriptions run on the read loop (SubInline).
	Inline bool
	// Resume connects without Clean Start, so a session kept by an earlier connection with
	// the same client identifier (Session) is resumed with what the broker queued for it.
	Resume bool
	// Queue selects a durable publish path: "" (none), "memory" or "file". QueueDir holds the
	// file queue.
	Queue    string
	QueueDir string
	// Store gives tern a session store: "" (none), "memory" (tern.NewMemoryStore) or
	// "file" (filestore in StoreDir, default options: syncs every write, group commit).
	// Other libraries ignore it.
	Store    string
	StoreDir string
	// Pool is the size of tern's publisher pool (WithPublisherPool); 0: none. Other
	// libraries have no pool and ignore it.
	Pool int
	// V311 makes tern speak MQTT 3.1.1 (the tern-v3 rows, beside paho3 on its own
	// protocol); its outbound window is then the client's 3.1.1 default, 20, like paho3's.
	// Other libraries ignore it.
	V311 bool
	// WS makes tern connect over WebSocket (ws://Addr/mqtt, package ws) instead of TCP.
	// Addr is then the broker's WebSocket listener. Other libraries cannot and refuse it.
	WS bool
}

// ErrUnavailable reports a library feature that does not exist (yet): the row is skipped,
// not failed.
var ErrUnavailable = errors.New("not available")

// Mode is how a subscriber takes its messages.
type Mode string

// Subscription modes.
const (
	Callback Mode = "callback" // the library calls a function per message
	Channel  Mode = "channel"  // messages come through a channel the application drains
)

// Payloads stamps the payloads a publisher sends.
type Payloads interface {
	// New returns a payload buffer ready to be stamped.
	New() []byte
	// Stamp prepares buf (from New) as message i.
	Stamp(buf []byte, i int)
}

// Client is one connection of one library.
type Client interface {
	// Connect connects and waits for CONNACK.
	Connect(ctx context.Context) error
	// Publish publishes one message to the configured topic and returns once the QoS is
	// honoured: written (QoS 0), acknowledged (1) or completed (2). payload may be reused
	// when it returns.
	Publish(ctx context.Context, qos byte, payload []byte) error
	// Subscribe subscribes to the configured topic; h sees every message's payload, which
	// it must not keep.
	Subscribe(ctx context.Context, qos byte, mode Mode, h func(payload []byte)) error
	// Disconnect disconnects cleanly.
	Disconnect(ctx context.Context) error
}

// Pipeliner is a Client whose library has an asynchronous publish: one goroutine keeps as
// many messages in flight as the library allows.
type Pipeliner interface {
	// PublishPipelined publishes messages 0 to n-1 of src and returns once all are
	// acknowledged (QoS 1/2) or written (QoS 0).
	PublishPipelined(ctx context.Context, qos byte, n int, src Payloads) error
}

// Enqueuer is a Client configured with a durable publish queue.
type Enqueuer interface {
	// Enqueue stores one QoS 1 message for the background drain; payload may be reused when
	// it returns.
	Enqueue(ctx context.Context, payload []byte) error
}

// Drainer is a Client that can take over a session the broker kept (Config.Session and
// Resume): its handler is in place before the connection, so the messages the broker
// queued, which arrive right after CONNACK, are not lost.
type Drainer interface {
	// SubscribeConnect sets up the subscription's handler, connects and subscribes.
	SubscribeConnect(ctx context.Context, qos byte, mode Mode, h func(payload []byte)) error
}

// New returns the client of the named library: tern, autopaho, paho3 or raw.
func New(lib string, cfg Config) (Client, error) {
	if cfg.WS && lib != "tern" {
		return nil, fmt.Errorf("adapters: %s over WebSocket: %w", lib, ErrUnavailable)
	}
	switch lib {
	case "tern":
		return &Tern{cfg: cfg}, nil
	case "autopaho":
		return &Autopaho{cfg: cfg}, nil
	case "paho3":
		return &Paho3{cfg: cfg}, nil
	case "raw":
		return &Raw{cfg: cfg}, nil
	}
	return nil, fmt.Errorf("adapters: unknown library %q (want %v)", lib, Libraries())
}

// Libraries lists the library names New accepts.
func Libraries() []string {
	l := []string{"tern", "autopaho", "paho3", "raw"}
	sort.Strings(l)
	return l
}

// PublishConcurrent publishes messages 0 to n-1 of src with workers goroutines, each calling
// the synchronous Publish with a payload buffer of its own. It is also how a library without
// an asynchronous form keeps a window busy.
func PublishConcurrent(ctx context.Context, c Client, qos byte, n, workers int, src Payloads) error {
	return Concurrently(n, workers, src, func(i int, buf []byte) error {
		if err := c.Publish(ctx, qos, buf); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		return nil
	})
}

// Concurrently hands messages 0 to n-1 of src to send from workers goroutines, each with a
// payload buffer of its own that it stamps before every call; send must be done with buf
// when it returns. A goroutine stops at the first error send returns; Concurrently returns
// one of those errors (nil if none) once every goroutine has ended.
func Concurrently(n, workers int, src Payloads, send func(i int, buf []byte) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := src.New()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				src.Stamp(buf, i)
				if err := send(i, buf); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// consumer runs a subscription handler on a goroutine of its own, fed through a channel: the
// Channel mode of the libraries that only call back. The zero value is idle.
type consumer struct {
	quit chan struct{} // closed by stop
	wg   sync.WaitGroup
}

// start starts the goroutine, which calls h for every payload given to the returned send,
// in order. send blocks while the channel's 1024 slots are full and drops the payload once
// stop was called; the payload must not be reused after send. Call start at most once.
func (c *consumer) start(h func([]byte)) (send func([]byte)) {
	ch, quit := make(chan []byte, 1024), make(chan struct{})
	c.quit = quit
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			select {
			case p := <-ch:
				h(p)
			case <-quit:
				return
			}
		}
	}()
	return func(p []byte) {
		select {
		case ch <- p:
		case <-quit:
		}
	}
}

// stop ends the goroutine, if start was called, and waits for it.
func (c *consumer) stop() {
	if c.quit != nil {
		close(c.quit)
		c.wg.Wait()
	}
}

// Pipelined publishes through the library's asynchronous form when it has one, and
// otherwise through PublishConcurrent with window goroutines.
func Pipelined(ctx context.Context, c Client, qos byte, n, window int, src Payloads) error {
	if p, ok := c.(Pipeliner); ok {
		return p.PublishPipelined(ctx, qos, n, src)
	}
	return PublishConcurrent(ctx, c, qos, n, window, src)
}
