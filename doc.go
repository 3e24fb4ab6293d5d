// Package tern is an MQTT 5 client (3.1.1 by WithProtocol) that keeps what it was given:
// messages it accepted are delivered through broker restarts, network cuts and, with a Store
// and a durable queue, process crashes.
//
// Start with New, which checks every option, then Connect. Subscribe (a channel),
// SubscribeQueue (a Queue) or SubscribeCallback (a function) may be called before Connect,
// so that the messages a resumed session delivers right after CONNACK find their route;
// WithUnroutedHandler receives the rest. Publish sends QoS 0, 1 or 2 and returns when the
// broker has acknowledged; PublishAsync returns a token at once, so that one goroutine can
// keep the broker's whole Receive Maximum window busy. QueuePublisher puts a durable queue
// (package filequeue) in front of the client: Publish returns once the message is stored.
//
// Goroutines: each connection has a reader and a writer goroutine (plus a keepalive
// goroutine), and a supervisor goroutine per client reconnects with backoff, resends what
// was in flight and restores subscriptions; every call is safe for concurrent use and
// nothing waits while holding the session lock. Callbacks run one at a time, off the read
// loop, and must not block.
//
// Received QoS 1/2 messages are acknowledged to the broker when the application calls
// Message.Ack (or at once with SubAutoAck), always in arrival order, as MQTT 5 section 4.6
// requires. docs/DESIGN.md in the repository describes the internals.
package tern
