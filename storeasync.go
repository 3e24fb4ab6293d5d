package tern

import (
	"fmt"
	"time"
)

// AsyncStore is a Store that can also take a record without making the caller wait for it
// to become durable. The client uses PutAsync, when its Store has it, for the receipt of an
// inbound QoS 2 message (RecordInbound): the read loop goes on reading while receipts of
// many messages share one sync, instead of paying one sync per message.
//
// The write-ahead contract is unchanged: PUBREC for a message is written only after done
// has reported its receipt durable, and after the application acknowledged the message;
// acknowledgements still leave in arrival order, so a receipt not yet durable holds back
// every acknowledgement behind it (MQTT 5 §4.6). The message is delivered to the
// application while its receipt commits. If the process dies in that short window, no
// PUBREC was sent, so the broker sends the message again to the next process, which
// delivers it again; the exactly-once promise covers exchanges past PUBREC.
//
// PutAsync stores r as Put does (the same ordering with later Delete, Reset and Put calls)
// and calls done exactly once: with nil once r is as durable as Put would have made it, or
// with the error that stopped it. done may run before PutAsync returns or on a goroutine of
// the store; calls for one store come in the order of PutAsync calls. done must not block
// and must not call the Store. PutAsync may block while too many records wait for their
// sync (a bound the Store documents), never under the client's locks.
type AsyncStore interface {
	Store
	PutAsync(r StoreRecord, done func(error))
}

// putReceiptAsync stores the receipt of an inbound QoS 2 message, id, already in the
// acknowledgement queue with storing set. Called without c.mu, on the read loop.
func (c *Client) putReceiptAsync(as AsyncStore, in *inbound, id uint16) {
	as.PutAsync(StoreRecord{Kind: RecordInbound, ID: id, Time: time.Now()}, func(err error) {
		c.receiptStored(in, id, err)
	})
}

// receiptStored settles one asynchronous receipt: the message's acknowledgement may go once
// the application has acknowledged it too. A failed receipt never lets PUBREC go: the
// connection that carries the acknowledgement closes, as after a failed Put, and the
// broker's resend stores the receipt again.
func (c *Client) receiptStored(in *inbound, id uint16, err error) {
	var failed *conn
	c.mu.Lock()
	// The record cannot have been recycled: it leaves the queue and the pool only once
	// storing is clear. The identity check guards against a caller bug all the same.
	if in.id == id && in.storing {
		in.storing = false
		in.storeFailed = err != nil
		if err == nil {
			c.flushAcksLocked()
		} else if cn := c.conn; cn != nil && cn.gen == in.gen {
			failed = cn
		}
	}
	c.mu.Unlock()
	if err != nil {
		c.log.Warn("tern: store receipt failed", "err", err, "id", id)
	}
	if failed != nil {
		// close, not closeWith: done must not wait for the writer to stop.
		failed.close(fmt.Errorf("%w: tern: store receipt: %w", ErrConnectionLost, err))
	}
}

// ackHeld reports whether in's acknowledgement must wait for its receipt: it is still being
// stored, or storing it failed. Caller holds c.mu.
func (in *inbound) ackHeld() bool { return in.storing || in.storeFailed }
