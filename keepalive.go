package tern

import (
	"fmt"
	"sync"
	"time"

	"github.com/ternmq/tern/packet"
)

// keepalive sends PINGREQ when either direction has been quiet for three quarters of the
// keepalive, and closes the connection when PINGRESP does not come within the ping timeout.
// It is a timer, not a goroutine: each firing looks at the connection's read and write
// counters and arms the timer for the next moment something can be due. While traffic
// flows it fires every tick (at most 1 s, at most a quarter of the keepalive), which bounds
// how late it learns that a direction went quiet; once both are quiet it sleeps until the
// quieter one reaches three quarters of the keepalive, so an idle connection wakes it about
// three times per keepalive period. Cost while idle: one runtime timer, no goroutine.
type keepalive struct {
	cn         *conn
	tick       time.Duration
	quietAfter time.Duration

	firing sync.WaitGroup // a firing in progress; see wait

	mu                    sync.Mutex // serialises firings with stop; after Client.mu, before writer.mu
	t                     *time.Timer
	stopped               bool
	lastReads, lastWrites uint64
	lastRead, lastWrite   time.Time // when a change of each counter was first seen
}

// startKeepalive arms the keepalive of cn for keepalive ka (> 0).
func startKeepalive(cn *conn, ka time.Duration) *keepalive {
	k := &keepalive{cn: cn, tick: min(ka/4, time.Second), quietAfter: ka * 3 / 4}
	now := time.Now()
	k.lastReads, k.lastWrites = cn.reads.Load(), cn.w.writes.Load()
	k.lastRead, k.lastWrite = now, now
	k.mu.Lock()
	k.t = time.AfterFunc(k.tick, k.fire)
	k.mu.Unlock()
	return k
}

// stop disarms the timer; a firing in progress finishes without re-arming it. It does not
// wait (it runs under Client.mu, from conn.close); wait does.
func (k *keepalive) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	k.t.Stop()
}

// wait stops the timer and waits for a firing in progress to finish.
func (k *keepalive) wait() {
	k.stop()
	k.firing.Wait()
}

func (k *keepalive) fire() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	k.firing.Add(1) // before wait's Wait: stop is ordered after this by k.mu
	defer k.firing.Done()
	next, err := k.check(time.Now())
	if err == nil && next > 0 {
		k.t.Reset(next)
	}
	k.mu.Unlock()
	if err != nil {
		k.cn.close(err) // takes k.mu (stop): not under it
	}
}

// check is one look at the connection at now: it sends PINGREQ or reports a ping timeout as
// needed and returns how long until the next look (0: none, the connection is failing).
func (k *keepalive) check(now time.Time) (time.Duration, error) {
	cn := k.cn
	busy := false
	if r := cn.reads.Load(); r != k.lastReads {
		k.lastReads, k.lastRead, busy = r, now, true
	}
	if w := cn.w.writes.Load(); w != k.lastWrites {
		k.lastWrites, k.lastWrite, busy = w, now, true
	}
	timeout := cn.c.cfg.pingTimeout
	if sent := cn.pingSent.Load(); sent != 0 {
		due := time.Unix(0, sent).Add(timeout)
		if !now.Before(due) {
			if s := cn.c.st; s != nil {
				s.PingTimeouts.Add(1)
			}
			return 0, fmt.Errorf("%w: no PINGRESP within %v", ErrConnectionLost, timeout)
		}
		// Tick meanwhile: the PINGREQ's own write and the PINGRESP move the counters, and
		// the quiet periods after them must be measured from close to when they happened.
		return min(k.tick, due.Sub(now)), nil
	}
	quietFrom := k.lastRead
	if k.lastWrite.Before(quietFrom) {
		quietFrom = k.lastWrite
	}
	if now.Sub(quietFrom) >= k.quietAfter {
		cn.pingSent.Store(now.UnixNano())
		if cn.w.sendUrgent(pingreq[:]) != nil {
			return 0, nil // the writer failed: the connection is closing already
		}
		return min(k.tick, timeout), nil
	}
	if busy {
		return k.tick, nil
	}
	return quietFrom.Add(k.quietAfter).Sub(now), nil
}

var pingreq = [2]byte{byte(packet.PINGREQ) << 4, 0}
