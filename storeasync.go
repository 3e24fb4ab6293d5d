package tern

import (
	"fmt"
	"time"
)

// AsyncStore is a Store that can also take a record without making the caller wait for it
// to become durable. The client uses PutAsync, when its Store has it, for the receipt of an
// inbound QoS 2 message (RecordInbound): the goroutine that acknowledged the message goes on
// while receipts of many messages share one sync, instead of paying one sync per message.
// It uses it too for the RecordReleased of an outbound QoS 2 message on PUBREC, so the read
// loop does not wait for a sync per PUBREC; PUBREL is written once done reports the record
// durable (see putReleased).
//
// The write-ahead contract is unchanged: the receipt is stored once the application has
// acknowledged the message, and PUBREC is written only after done has reported it durable;
// acknowledgements still leave in arrival order, so a receipt not yet durable holds back
// every acknowledgement behind it (MQTT 5 §4.6). If the process dies before the receipt is
// durable, no PUBREC was sent, so the broker sends the message again to the next process,
// which delivers it again; the exactly-once promise covers exchanges past PUBREC. A receipt
// is never stored for a message the application has not acknowledged: after a crash, the
// next process would take the broker's resend of it for a duplicate and drop it.
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

// putReceipt stores the receipt of an inbound QoS 2 message, id, already in the
// acknowledgement queue with storing set and acknowledged by the application. Called
// without c.mu: by the goroutine that released the last handle (Message.Ack), or by the
// read loop for a resend after a failed receipt. With a Store that is not an AsyncStore,
// the caller waits for Put.
func (c *Client) putReceipt(in *inbound, id uint16) {
	r := StoreRecord{Kind: RecordInbound, ID: id, Time: time.Now()}
	if as, ok := c.store.(AsyncStore); ok {
		as.PutAsync(r, func(err error) { c.receiptStored(in, id, err) })
		return
	}
	c.receiptStored(in, id, c.store.Put(r))
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

// putReleased stores the RecordReleased of om, an outbound QoS 2 publish that got PUBREC
// and is marked releasing, and writes PUBREL once the record is durable (releaseStored).
// Called by the read loop without c.mu. With an AsyncStore the read loop goes on while the
// record commits, and the records of many PUBRECs share one sync; with another Store it
// waits for Put, as for a receipt.
//
// PUBREL must not leave before the record is durable: after a crash the next process would
// load the RecordPublish and send the message again with DUP under an identifier the broker
// may have forgotten after PUBCOMP, and the message would be delivered twice.
func (c *Client) putReleased(om *outMsg, gen uint32, rec StoreRecord) {
	if as, ok := c.store.(AsyncStore); ok {
		as.PutAsync(rec, func(err error) { c.releaseStored(om, gen, err) })
		return
	}
	c.releaseStored(om, gen, c.store.Put(rec))
}

// releaseStored settles the RecordReleased of om. Once it is durable, PUBREL goes on the live
// connection, whichever it is now; with none, the next resumed session sends it
// (resendLocked skips a message still releasing). A message completed meanwhile (session
// lost, Disconnect) needs nothing more. A failed record never lets PUBREL go: the message
// keeps its packet and goes back to awaiting PUBREC, and the live connection closes, so the
// next one sends the PUBLISH again with DUP and the broker's new PUBREC tries the record
// again (a receiver answers PUBREC to a PUBLISH it holds until PUBREL). Runs on the store's goroutine or the read loop, without c.mu; it
// does not call the Store.
func (c *Client) releaseStored(om *outMsg, gen uint32, err error) {
	var failed *conn
	c.mu.Lock()
	if om.relGen != gen {
		// Overtaken: the session was lost and the message sent again (resendLocked).
		c.mu.Unlock()
		return
	}
	if om.releasing && !om.done {
		if err == nil {
			c.releasedLocked(om)
			if cn := c.conn; cn != nil {
				sendPubrel(cn, om.id) // a failed write closes the connection; resend covers it
			}
		} else {
			failed = c.conn
		}
	}
	om.releasing = false
	c.mu.Unlock()
	if err != nil {
		c.log.Warn("tern: store release failed", "err", err, "id", om.id)
	}
	if failed != nil {
		// close, not closeWith: done must not wait for the writer to stop.
		failed.close(fmt.Errorf("%w: tern: store release: %w", ErrConnectionLost, err))
	}
}
