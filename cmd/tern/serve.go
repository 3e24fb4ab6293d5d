package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/ternmq/tern/cmd/tern/internal/broker"
)

func runServeCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", "[flags]", `Runs the embedded MQTT broker (mochi-mqtt server v2) until SIGINT or SIGTERM.
Anonymous access, no TLS: it refuses addresses outside loopback.`, stderr)
	addr := fs.String("addr", "127.0.0.1:1883", "listen `address` (host:port, loopback only)")
	wsAddr := fs.String("ws", "", "also listen for MQTT over WebSocket on `address` (host:port, loopback only; any path, e.g. ws://127.0.0.1:8080/mqtt)")
	maxInflight := fs.Int("max-inflight", 0, "Receive Maximum granted to each client: QoS 1/2 publishes it may have unacknowledged (0: mochi's 1024)")
	persist := fs.String("persist", "", "`dir`ectory to save sessions, subscriptions, in-flight and retained messages in (a snapshot every second and at exit; not crash-safe)")
	verbose := fs.Bool("v", false, "log mochi's messages from debug level up (default: errors only; mochi reports every dropped connection as a warning)")
	if st := parseFlags(fs, args); st >= 0 {
		return st
	}
	if *maxInflight < 0 || *maxInflight > math.MaxUint16 {
		fmt.Fprintf(stderr, "tern serve: --max-inflight must be in [0, 65535]\n")
		return 2
	}
	for _, a := range []string{*addr, *wsAddr} {
		if a == "" {
			continue
		}
		if err := checkLoopback(a); err != nil {
			fmt.Fprintf(stderr, "tern serve: %v\n", err)
			return 2
		}
	}
	if *persist != "" {
		if err := os.MkdirAll(*persist, 0o755); err != nil {
			fmt.Fprintf(stderr, "tern serve: %v\n", err)
			return 1
		}
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	b, err := broker.Start(*addr, broker.Options{
		MaxInflight: uint16(*maxInflight),
		PersistDir:  *persist,
		Logger:      log,
		WSAddr:      *wsAddr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "tern serve: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "tern serve: listening on %s\n", b.URL())
	if u := b.WSURL(); u != "" {
		fmt.Fprintf(stdout, "tern serve: listening on %s\n", u)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	stop() // a second signal kills the process the usual way
	fmt.Fprintln(stdout, "tern serve: stopping")
	if err := b.Close(); err != nil {
		fmt.Fprintf(stderr, "tern serve: %v\n", err)
		return 1
	}
	return 0
}

// checkLoopback refuses a listen address outside loopback: the broker has no
// authentication.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed", addr)
	}
	return nil
}
