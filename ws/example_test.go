package ws_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/ws"
)

// A client over WebSocket: the broker URL says ws:// (or wss://) and the transport is given
// once; everything else is as over TCP. MQTT_WS_BROKER holds a URL such as
// ws://localhost:8080/mqtt.
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tern.New(
		tern.WithBroker(os.Getenv("MQTT_WS_BROKER")),
		tern.WithTransport(ws.New(ws.WithHeader(http.Header{"X-Client": {"example"}}))),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)
	msgs, _, err := c.Subscribe(ctx, []tern.TopicFilter{{Topic: "example/ws"}}, tern.SubAutoAck())
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Publish(ctx, tern.PublishOptions{Topic: "example/ws", Payload: []byte("over WebSocket"), QoS: 1}); err != nil {
		log.Fatal(err)
	}
	fmt.Println(string((<-msgs).Payload))
	// Output: over WebSocket
}
