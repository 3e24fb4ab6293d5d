package tern_test

import (
	"context"
	"fmt"
	"log"
	"net/url"
	"os"
	"time"

	"github.com/ternmq/tern"
)

// Server redirects restricted to known hosts; whatever the policy, a redirect never lowers
// the transport's security. Inbound packets are allowed up to 4 MiB instead of the default
// 1 MiB.
func ExampleWithRedirectPolicy() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tern.New(tern.WithBroker(os.Getenv("MQTT_BROKER")),
		tern.WithRedirectPolicy(tern.RedirectAllowList("broker-b.example.com", "broker-c.example.com:8883")),
		tern.WithMaximumPacketSize(4<<20),
		tern.WithOnConnectError(func(err error) { log.Println("connect:", err) }))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)
	fmt.Println(c.Connected())

	// A policy is any func; this one follows only a move to another port of the same host.
	_ = tern.RedirectPolicy(func(from, to *url.URL) bool { return to.Hostname() == from.Hostname() })
	// Output: true
}
