// Command connect publishes one message to a broker over WebSocket (ws:// or wss://), with
// a TCP broker as the fallback.
//
//	go run ./examples/connect -broker wss://broker.example/mqtt -fallback mqtts://backup.example
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/ws"
)

func main() {
	broker := flag.String("broker", "ws://localhost:8080/mqtt", "WebSocket broker URL")
	fallback := flag.String("fallback", "mqtt://localhost:1883", "TCP broker URL")
	token := flag.String("token", "", "bearer token for the HTTP handshake")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	header := http.Header{}
	if *token != "" {
		header.Set("Authorization", "Bearer "+*token)
	}
	c, err := tern.New(
		tern.WithBrokers(*broker, *fallback),
		tern.WithTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}), // reused for wss://
		tern.WithTransport(ws.New(ws.WithHeader(header))),             // ws.WithProxy overrides $HTTPS_PROXY
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	err = c.Publish(ctx, tern.PublishOptions{Topic: "hello", Payload: []byte("over WebSocket"), QoS: 1})
	if err != nil {
		log.Fatal(err)
	}
}
