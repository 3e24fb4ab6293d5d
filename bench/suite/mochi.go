package suite

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// mochiBroker is the embedded broker of the transport scenarios: one mochi server with a
// TCP and a WebSocket listener, so tern over TCP and tern over WebSocket meet the same
// broker code and the ratio of their rows isolates the transport. It runs in the suite's
// process, like the sink and the feeder; the child's CPU stays the library's alone.
type mochiBroker struct {
	srv     *mqtt.Server
	tcpAddr string
	wsAddr  string
}

// mochiWritesPending is how many packets mochi queues for one client before it drops
// QoS 0 messages (MaximumClientWritesPending, a channel of pointers: 8 MiB). It is above
// every scenario's message count, so a receiver that falls behind the feeder delays the
// run instead of losing messages.
const mochiWritesPending = 1 << 20

// startMochi starts the broker on free loopback ports and waits until both accept.
func startMochi() (*mochiBroker, error) {
	var lastErr error
	for range 5 { // the WebSocket port is chosen here and may be taken before mochi binds it
		b, err := tryMochi()
		if err == nil {
			return b, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("mochi: %w", lastErr)
}

func tryMochi() (*mochiBroker, error) {
	// mochi's WebSocket listener binds by address and does not report the port it got.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	wsAddr := ln.Addr().String()
	ln.Close()

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumMessageExpiryInterval = 0 // no 24 h expiry stamped on forwarded messages
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	caps.ReceiveMaximum = brokerWindow // the window Mosquitto grants in the other scenarios
	caps.MaximumClientWritesPending = mochiWritesPending
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		return nil, err
	}
	if err := srv.AddListener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: wsAddr})); err != nil {
		srv.Close()
		return nil, err
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, err
	}
	if err := waitAccepting(wsAddr, 5*time.Second); err != nil {
		srv.Close()
		return nil, err
	}
	return &mochiBroker{srv: srv, tcpAddr: tcp.Address(), wsAddr: wsAddr}, nil
}

// waitAccepting polls until addr accepts a TCP connection, or the timeout.
func waitAccepting(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept: %w", addr, err)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
}

func (b *mochiBroker) close() { b.srv.Close() }
