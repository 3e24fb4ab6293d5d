package tern

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packet"
)

// Fault acceptance tests of the supervisor against a real Mosquitto: connections cut under
// load, the broker restarted, a dead peer, failover between brokers, a subscriber's session
// resumed, and Disconnect bounded by its ctx whatever the connection is doing. Faults come
// from the fault proxy or from stopping the broker; nothing here sleeps to synchronise.

// Connections cut every 500 completed publishes while 8 goroutines publish 10,000 QoS 1
// messages: every Publish returns once with nil and the subscriber gets every number.
func TestFaultCutsQoS1(t *testing.T) { testFaultCuts(t, 1) }

// The same with QoS 2, which must also deliver nothing twice.
func TestFaultCutsQoS2(t *testing.T) { testFaultCuts(t, 2) }

func testFaultCuts(t *testing.T, qos byte, extra ...Option) {
	const (
		total    = 10000
		workers  = 8
		cutEvery = 500
	)
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	brokerLogOnFailure(t, b)
	proxy := faultproxy.New(t, b.Addr)
	ctx := faultCtx(t, 3*time.Minute)
	topic := fmt.Sprintf("fault/cuts/q%d", qos)

	// The subscriber talks to the broker directly: every fault is on the publisher's side. Its
	// session outlives a connection all the same: Mosquitto 2.0.11 sends more QoS 2 messages
	// than the Receive Maximum allows once a subscriber lags, and the client answers that
	// with DISCONNECT 0x93 (see TestFaultQoS2SmallReceiveMaximum).
	sub := newTestClient(t, b.URL, append([]Option{WithClientID(fmt.Sprintf("fault-cuts-sub-q%d", qos)),
		WithSessionExpiry(time.Hour), fastReconnect(), failureLog(t, "subscriber")}, extra...)...)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: topic, QoS: 2}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	sink := newSeqSink(total, 1)
	go sink.drain(0, ch)

	pub := newTestClient(t, proxy.URL(), append([]Option{WithClientID(fmt.Sprintf("fault-cuts-pub-q%d", qos)),
		WithSessionExpiry(time.Hour), fastReconnect(), failureLog(t, "publisher")}, extra...)...)
	defer func() {
		if t.Failed() {
			t.Logf("publisher stats %+v", pub.Stats())
			t.Logf("subscriber stats %+v", sub.Stats())
		}
	}()

	// The cutter breaks the publisher's connection each time the count of completed
	// publishes passes a multiple of cutEvery. A completion has just come through a live
	// connection, so each cut almost always lands on one. One cut in three is at once; the
	// others come after a pseudo-random number of bytes up or down, so they fall inside
	// packets: a PUBLISH half-received by the broker, an acknowledgement half-received by the
	// client.
	cutReq := make(chan int64, total/cutEvery)
	cutsDone := make(chan int)
	var cutErrs []string
	go func() {
		rng := rand.New(rand.NewPCG(uint64(qos), 42)) // fixed: a failure replays the same cuts
		n := 0
		for range cutReq {
			if n%3 == 0 {
				proxy.Cut()
				n++
				continue
			}
			k := 1 + rng.Int64N(150)
			accepted := proxy.Accepted()
			if n%3 == 1 {
				proxy.CutAfter(k)
			} else {
				proxy.CutAfterDown(k)
			}
			// The limit also applies to new connections; lift it once the client has
			// redialled (an attempt caught by it meanwhile is cut too, and retried).
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := proxy.WaitAccepted(wctx, accepted+1)
			cancel()
			proxy.CutAfter(-1)
			proxy.CutAfterDown(-1)
			if err != nil {
				cutErrs = append(cutErrs, fmt.Sprintf("cut %d after %d bytes: no reconnection within 10s", n, k))
			}
			n++
		}
		cutsDone <- n
	}()
	res := publishSeq(ctx, pub, 0, total, workers,
		func(int) PublishOptions { return PublishOptions{Topic: topic, QoS: qos} },
		func(done int64) {
			if done%cutEvery == 0 && done < total {
				cutReq <- done // never blocks: room for every cut
			}
		})
	close(cutReq)
	cuts := <-cutsDone
	res.check(t, "publish under cuts")
	for _, e := range cutErrs {
		t.Error(e)
	}
	if err := pub.Publish(ctx, PublishOptions{Topic: topic, QoS: qos, Payload: []byte(endMarker)}); err != nil {
		t.Fatalf("end marker: %v", err)
	}
	sink.waitAll(t, time.Minute, 0)

	st := pub.Stats()
	dups := sink.dups()
	t.Logf("QoS %d: %d publishes in %v with %d cuts; publisher: %d connects, %d connections lost, %d connect errors, %d resent with DUP; subscriber duplicates by QoS %v",
		qos, total, res.elapsed.Round(time.Millisecond), cuts, st.Connects, st.ConnectionLost, st.ConnectErrors, st.PublishResent, dups)
	if qos == 2 && dups != ([3]int{}) {
		t.Errorf("QoS 2 delivered %v duplicates (by QoS), want none", dups)
	}
	if s := sink.strays(); len(s) > 0 {
		t.Errorf("unexpected payloads %q", s)
	}
	if st.PublishFailed != 0 {
		t.Errorf("%d publishes failed", st.PublishFailed)
	}
	// Each cut lands on a live connection; allow a few to hit one still being set up.
	if cuts != total/cutEvery-1 || int(st.ConnectionLost) < cuts/2 {
		t.Errorf("%d cuts made (want %d), %d connections lost: the faults did not happen", cuts, total/cutEvery-1, st.ConnectionLost)
	}
	if got := sub.Stats().ConnectionLost; got != 0 {
		// Not the publisher's doing; see the subscriber's comment above.
		t.Logf("the directly connected subscriber lost its connection %d times", got)
	}
}

// The broker is stopped and started again (with persistence) twice while 10,000 messages,
// half QoS 1 and half QoS 2, are being published. Both clients keep their sessions: every
// Publish returns nil, the subscriber gets every number without subscribing again, and no
// QoS 2 message twice while the subscriber's receipt covers it.
//
// That last clause is all a client can promise here. Mosquitto 2.0.11 evidently restores at
// most max_inflight_messages (20) in-flight messages per client with their state; the rest of
// a larger window (the subscriber grants 1024) come back as fresh PUBLISH packets with DUP=1,
// even those it had already released with PUBREL. The wire capture of a failing run showed
// it: PUBREL for ids 3240-3316 before and just after SIGTERM and the client's PUBCOMP for
// each; after the restart PUBREL again for the 20 oldest (3201-3239), then PUBLISH DUP=1 for
// 3240 onwards, same ids, same payloads. With max_inflight_messages 1000 it never happened in
// 40 runs. After PUBCOMP the identifier is free, and a DUP=1 PUBLISH under it cannot be told
// from a new message whose first copy was lost in the restart, which must be delivered
// (TestInboundQoS2ReceiptAcrossReconnect). So the subscriber's traffic is recorded through
// the fault proxy and its store notes when it deletes a receipt (on PUBREL, before PUBCOMP,
// which may not reach the wire before the connection closes). A second delivery is allowed
// only for a copy the broker sent after its own PUBREL once the client had handled that
// PUBREL; any other duplicate fails the test and shows its bytes.
func TestFaultBrokerRestart(t *testing.T) { testFaultBrokerRestart(t, packet.Version5) }

// testFaultBrokerRestart runs TestFaultBrokerRestart with clients on protocol level (given
// the options that choose it in extra).
func testFaultBrokerRestart(t *testing.T, level byte, extra ...Option) {
	const (
		total   = 10000
		workers = 8
	)
	b := brokertest.StartMosquitto(t, brokertest.Config{Persistence: true})
	brokerLogOnFailure(t, b)
	// The subscriber goes through a recording proxy (which only forwards): its traffic
	// decides which duplicates the broker caused, and shows the bytes around each restart.
	subProxy := faultproxy.New(t, b.Addr)
	subProxy.Record(true)
	events := make(map[time.Time]string)
	ctx := faultCtx(t, 3*time.Minute)
	qosOf := func(seq int) byte { return byte(1 + seq%2) }
	topicOf := func(seq int) string { return fmt.Sprintf("fault/restart/q%d", qosOf(seq)) }

	// Mosquitto 2.0.11 drops at restart a session first created with Clean Start 1, even
	// with an expiry (BROKERS.md): both sessions start with Clean Start 0.
	persistent := append([]Option{WithCleanStart(false), WithSessionExpiry(time.Hour), fastReconnect()}, extra...)
	subLife := newLifecycle()
	receipts := newReceiptLog()
	sub := newTestClient(t, subProxy.URL(), append(append([]Option{WithClientID("fault-restart-sub"), WithStore(receipts)},
		persistent...), subLife.options()...)...)
	subLife.waitUp(t, 10*time.Second, "subscriber connect")
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "fault/restart/+", QoS: 2}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	sink := newSeqSink(total, 1)
	go sink.drain(0, ch)
	pubLife := newLifecycle()
	pub := newTestClient(t, b.URL, append(append([]Option{WithClientID("fault-restart-pub")}, persistent...), pubLife.options()...)...)
	pubLife.waitUp(t, 10*time.Second, "publisher connect")

	for _, c := range []*Client{sub, pub} {
		if v := c.Info().Version; v != level {
			t.Fatalf("protocol level %d, want %d", v, level)
		}
	}
	restartAt := map[int64]bool{total / 3: true, 2 * total / 3: true}
	restartReq := make(chan int64, len(restartAt))
	resc := make(chan *pubResult, 1)
	go func() {
		resc <- publishSeq(ctx, pub, 0, total, workers,
			func(seq int) PublishOptions { return PublishOptions{Topic: topicOf(seq), QoS: qosOf(seq)} },
			func(done int64) {
				if restartAt[done] {
					restartReq <- done
				}
			})
	}()
	// Restart must run on the test goroutine: it fails the test if the broker does not
	// come back. A pending restart goes first, so a busy test goroutine cannot let the
	// publishers finish in between.
	for restarts := 1; restarts <= len(restartAt); restarts++ {
		var done int64
		select {
		case done = <-restartReq:
		case r := <-resc:
			select {
			case done = <-restartReq:
				resc <- r
			default:
				t.Fatalf("publishing ended before restart %d: %d ok, errors %v", restarts, r.ok.Load(), r.errs)
			}
		}
		t.Logf("restarting the broker after %d publishes", done)
		events[time.Now()] = fmt.Sprintf("restart %d: broker stopping (SIGTERM)", restarts)
		b.Restart(t)
		events[time.Now()] = fmt.Sprintf("restart %d: broker running again", restarts)
		for _, l := range []*lifecycle{subLife, pubLife} {
			if i := l.waitUp(t, 20*time.Second, "reconnect after restart"); !i.SessionPresent {
				t.Errorf("session lost at restart %d (client %s)", restarts, i.ClientID)
			}
		}
	}
	res := <-resc
	res.check(t, "publish across restarts")
	restarts := len(restartAt)
	if err := pub.Publish(ctx, PublishOptions{Topic: topicOf(1), QoS: 2, Payload: []byte(endMarker)}); err != nil {
		t.Fatalf("end marker: %v", err)
	}
	sink.waitAll(t, time.Minute, 0)

	dups := sink.dups()
	ps, ss := pub.Stats(), sub.Stats()
	t.Logf("%d publishes in %v with %d restarts; publisher: %d connections lost, %d connect errors, %d resent; subscriber: %d connections lost; duplicates by QoS %v",
		total, res.elapsed.Round(time.Millisecond), restarts, ps.ConnectionLost, ps.ConnectErrors, ps.PublishResent, ss.ConnectionLost, dups)
	checkQoS2Replays(t, sink, subProxy.Recording(), receipts, events, qosOf, strings.Contains(b.Log(), "SIGKILL"))
	if s := sink.strays(); len(s) > 0 {
		t.Errorf("unexpected payloads %q", s)
	}
	if ps.ConnectionLost < uint64(restarts) || ss.ConnectionLost < uint64(restarts) {
		t.Errorf("connections lost: publisher %d, subscriber %d; want at least %d each", ps.ConnectionLost, ss.ConnectionLost, restarts)
	}
}

// A connection whose peer goes silent (bytes stop both ways, TCP stays open) is found dead
// within keepalive + ping timeout; a reconnection that lands in a black hole is abandoned
// after the connect timeout; once the network heals the client reconnects and nothing
// published meanwhile is lost.
func TestFaultBlackHole(t *testing.T) {
	const (
		keepAlive   = time.Second
		pingTimeout = 500 * time.Millisecond
		connTimeout = time.Second
		// Slack for the keepalive ticker (a quarter of the keepalive) and a loaded machine.
		slack = 1500 * time.Millisecond
	)
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	proxy := faultproxy.New(t, b.Addr)
	ctx := faultCtx(t, 2*time.Minute)
	const before, during = 10, 20

	sub := newTestClient(t, b.URL)
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: "fault/bh", QoS: 1}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	sink := newSeqSink(before+during, 1)
	go sink.drain(0, ch)

	life := newLifecycle()
	c := newTestClient(t, proxy.URL(), append([]Option{WithClientID("fault-bh"), WithSessionExpiry(time.Hour),
		WithKeepAlive(keepAlive), WithPingTimeout(pingTimeout), WithConnectTimeout(connTimeout), fastReconnect()},
		life.options()...)...)
	life.waitUp(t, 10*time.Second, "connect")
	msg := func(int) PublishOptions { return PublishOptions{Topic: "fault/bh", QoS: 1} }
	publishSeq(ctx, c, 0, before, 2, msg, nil).check(t, "publish before the fault")
	if !sink.waitFor(ctx, func() bool { return sink.rangeSeen(0, 0, before) }) {
		t.Fatalf("before the fault: %s", sink.summary())
	}

	// New connections become dead peers, and the live one goes silent.
	proxy.BlackHole(true)
	proxy.Stall()
	silentFrom := time.Now()
	resc := make(chan *pubResult, 1)
	go func() { resc <- publishSeq(ctx, c, before, before+during, 4, msg, nil) }()

	down := life.waitDown(t, keepAlive+pingTimeout+10*time.Second, "dead peer")
	if d, limit := down.at.Sub(silentFrom), keepAlive+pingTimeout+slack; d > limit {
		t.Errorf("dead connection detected after %v, want within %v", d, limit)
	} else {
		t.Logf("dead connection detected after %v: %v", d.Round(time.Millisecond), down.err)
	}
	if !errors.Is(down.err, ErrConnectionLost) {
		t.Errorf("connection down with %v, want ErrConnectionLost", down.err)
	}
	if n := c.Stats().PingTimeouts; n != 1 {
		t.Errorf("%d ping timeouts counted, want 1", n)
	}

	// The next attempt goes into the black hole and must give up after the connect timeout.
	attemptFrom := time.Now()
	if err := life.waitConnErr(connTimeout + 10*time.Second); err != nil && errors.Is(err, errNoEvent) {
		t.Fatalf("the attempt into the black hole never failed")
	} else if d := time.Since(attemptFrom); d > connTimeout+slack {
		t.Errorf("the attempt into the black hole failed after %v, want within %v: %v", d, connTimeout+slack, err)
	}
	select {
	case r := <-resc:
		t.Fatalf("publishes returned while no connection could carry them: %d ok, errors %v", r.ok.Load(), r.errs)
	default:
	}

	// Heal the network: new connections go through again.
	proxy.BlackHole(false)
	proxy.Resume()
	if i := life.waitUp(t, 20*time.Second, "reconnect after healing"); !i.SessionPresent {
		t.Errorf("session not resumed after the black hole")
	}
	select {
	case r := <-resc:
		r.check(t, "publish across the black hole")
	case <-ctx.Done():
		t.Fatal("publishes did not return after the reconnection")
	}
	if err := c.Publish(ctx, PublishOptions{Topic: "fault/bh", QoS: 1, Payload: []byte(endMarker)}); err != nil {
		t.Fatal(err)
	}
	sink.waitAll(t, 30*time.Second, 0)
	t.Logf("duplicates by QoS: %v; stats %+v", sink.dups(), c.Stats())
}

// A client given two brokers carries on with the second when the one it is connected to
// stops: every Publish returns nil, including those in flight at the stop, and every message
// reaches a subscriber of one broker or the other.
func TestFaultFailover(t *testing.T) {
	const (
		phase1 = 100 // before the stop
		phase2 = 500 // the stop comes after stopAfter of these
		phase3 = 100 // after the client is known to be on the other broker
		total  = phase1 + phase2 + phase3

		stopAfter = 100
	)
	// Persistence lets the stopped broker come back at the end and hand its subscriber what
	// it had accepted but not yet delivered when it stopped, so the union check is exact.
	brokers := []*brokertest.Mosquitto{
		brokertest.StartMosquitto(t, brokertest.Config{Persistence: true}),
		brokertest.StartMosquitto(t, brokertest.Config{Persistence: true}),
	}
	ctx := faultCtx(t, 2*time.Minute)
	const topic = "fault/failover"
	sink := newSeqSink(total, len(brokers))
	for i, b := range brokers {
		s := newTestClient(t, b.URL, WithClientID(fmt.Sprintf("fault-failover-sub%d", i)),
			WithCleanStart(false), WithSessionExpiry(time.Hour), fastReconnect())
		ch, _, err := s.Subscribe(ctx, []TopicFilter{{Topic: topic, QoS: 1}}, SubAutoAck())
		if err != nil {
			t.Fatal(err)
		}
		go sink.drain(i, ch)
	}

	life := newLifecycle()
	c := newTestClient(t, brokers[0].URL, append([]Option{WithBrokers(brokers[0].URL, brokers[1].URL),
		WithClientID("fault-failover-pub"), fastReconnect()}, life.options()...)...)
	first := life.waitUp(t, 10*time.Second, "connect")
	// The client may start with either broker.
	live := -1
	for i, b := range brokers {
		if first.Broker == b.URL {
			live = i
		}
	}
	if live < 0 {
		t.Fatalf("connected to %q, neither %q nor %q", first.Broker, brokers[0].URL, brokers[1].URL)
	}
	other := 1 - live
	t.Logf("connected first to broker %d (%s)", live, first.Broker)
	msg := func(int) PublishOptions { return PublishOptions{Topic: topic, QoS: 1} }

	publishSeq(ctx, c, 0, phase1, 4, msg, nil).check(t, "publish before the stop")
	if !sink.waitFor(ctx, func() bool { return sink.rangeSeen(live, 0, phase1) }) {
		t.Fatalf("before the stop: %s", sink.summary())
	}

	stopReq := make(chan struct{}, 1)
	resc := make(chan *pubResult, 1)
	go func() {
		resc <- publishSeq(ctx, c, phase1, phase1+phase2, 4, msg, func(done int64) {
			if done == stopAfter {
				stopReq <- struct{}{}
			}
		})
	}()
	select {
	case <-stopReq:
	case r := <-resc:
		select {
		case <-stopReq: // both were ready: the stop request came first
			resc <- r
		default:
			t.Fatalf("publishing ended before the stop: %d ok, errors %v", r.ok.Load(), r.errs)
		}
	}
	brokers[live].Stop()
	if i := life.waitUp(t, 20*time.Second, "failover"); i.Broker != brokers[other].URL {
		t.Fatalf("reconnected to %q, want the other broker %q", i.Broker, brokers[other].URL)
	}
	var res *pubResult
	select {
	case res = <-resc:
	case <-ctx.Done():
		t.Fatal("publishes did not return after the failover")
	}
	res.check(t, "publish across the failover")

	// Now on the other broker for sure: everything from here reaches its subscriber.
	publishSeq(ctx, c, phase1+phase2, total, 4, msg, nil).check(t, "publish after the failover")
	if !sink.waitFor(ctx, func() bool { return sink.rangeSeen(other, phase1+phase2, total) }) {
		t.Fatalf("after the failover: %s", sink.summary())
	}
	if got := c.Info().Broker; got != brokers[other].URL {
		t.Errorf("Info().Broker = %q, want %q", got, brokers[other].URL)
	}

	// Bring the stopped broker back so its subscriber collects what it had accepted.
	brokers[live].Restart(t)
	sink.waitAll(t, 30*time.Second)
	sink.mu.Lock()
	var onLive, onOther int
	for seq := phase1; seq < phase1+phase2; seq++ {
		if sink.counts[live][seq] > 0 {
			onLive++
		}
		if sink.counts[other][seq] > 0 {
			onOther++
		}
	}
	sink.mu.Unlock()
	t.Logf("of the %d published across the stop: %d reached the stopped broker's subscriber, %d the other's; duplicates by QoS %v; publisher stats %+v",
		phase2, onLive, onOther, sink.dups(), c.Stats())
}

// A subscriber with a persistent session is cut off and kept off while 100 QoS 1 and 100
// QoS 2 messages are published to it; when it comes back it receives all of them through
// the same channel, without subscribing again, and the QoS 2 ones exactly once.
func TestFaultSubscriberSessionResume(t *testing.T) {
	const n = 100 // per QoS
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	proxy := faultproxy.New(t, b.Addr)
	ctx := faultCtx(t, time.Minute)

	life := newLifecycle()
	sub := newTestClient(t, proxy.URL(), append([]Option{WithClientID("fault-resume-sub"), WithCleanStart(false),
		WithSessionExpiry(time.Hour), fastReconnect()}, life.options()...)...)
	life.waitUp(t, 10*time.Second, "connect")
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{
		{Topic: "fault/resume/q1", QoS: 1},
		{Topic: "fault/resume/q2", QoS: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := newSeqSink(2*n, 1)
	go sink.drain(0, ch) // acknowledges each message by hand

	proxy.Refuse(true)
	proxy.Cut()
	life.waitDown(t, 10*time.Second, "cut")

	pub := newTestClient(t, b.URL)
	msg := func(seq int) PublishOptions {
		if seq < n {
			return PublishOptions{Topic: "fault/resume/q1", QoS: 1}
		}
		return PublishOptions{Topic: "fault/resume/q2", QoS: 2}
	}
	publishSeq(ctx, pub, 0, 2*n, 4, msg, nil).check(t, "publish while the subscriber is away")
	if err := pub.Publish(ctx, PublishOptions{Topic: "fault/resume/q2", QoS: 2, Payload: []byte(endMarker)}); err != nil {
		t.Fatal(err)
	}
	if got := sink.missing(); len(got) != 2*n {
		t.Fatalf("%d messages arrived while the subscriber was cut off", 2*n-len(got))
	}

	proxy.Refuse(false)
	if i := life.waitUp(t, 10*time.Second, "reconnect"); !i.SessionPresent {
		t.Fatal("the broker did not keep the subscriber's session")
	}
	sink.waitAll(t, 30*time.Second, 0)
	dups := sink.dups()
	t.Logf("duplicates by QoS: %v; subscriber stats %+v", dups, sub.Stats())
	if dups[2] != 0 {
		// A broker that had to be killed restarts from an older database and resends what
		// it had already completed; say so, so the failure can be told apart.
		killed := strings.Contains(b.Log(), "SIGKILL")
		t.Errorf("%d QoS 2 messages delivered twice (broker killed at a restart: %v)", dups[2], killed)
	}
	if s := sink.strays(); len(s) > 0 {
		t.Errorf("unexpected payloads %q", s)
	}
	if got := sub.Stats().ConnectionLost; got != 1 {
		t.Errorf("connections lost %d, want 1", got)
	}
}

// A subscriber whose Receive Maximum window is full of QoS 2 messages the application has
// not acknowledged yet loses its connection. On the resumed session the broker sends those
// messages again (DUP): they are already counted in the window, so the client must take them
// as resends, not as a window overrun to answer with DISCONNECT 0x93, and carry on.
func TestFaultSubscriberFullWindowResume(t *testing.T) {
	const rm = 5 // the subscriber's Receive Maximum
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	proxy := faultproxy.New(t, b.Addr)
	ctx := faultCtx(t, time.Minute)
	const topic = "fault/window"

	life := newLifecycle()
	sub := newTestClient(t, proxy.URL(), append([]Option{WithClientID("fault-window-sub"),
		WithSessionExpiry(time.Hour), WithReceiveMaximum(rm), fastReconnect(), failureLog(t, "subscriber")},
		life.options()...)...)
	life.waitUp(t, 10*time.Second, "connect")
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: topic, QoS: 2}})
	if err != nil {
		t.Fatal(err)
	}
	pub := newTestClient(t, b.URL)
	msg := func(int) PublishOptions { return PublishOptions{Topic: topic, QoS: 2} }
	publishSeq(ctx, pub, 0, rm, 1, msg, nil).check(t, "publish the first window")
	sink := newSeqSink(2*rm, 1)
	var held []*Message
	for range rm {
		m := recv(t, ch)
		sink.record(0, m)
		held = append(held, m) // not acknowledged: the window stays full
	}

	proxy.Cut()
	life.waitDown(t, 10*time.Second, "cut")
	if i := life.waitUp(t, 10*time.Second, "reconnect"); !i.SessionPresent {
		t.Fatal("the broker did not keep the subscriber's session")
	}
	for _, m := range held {
		m.Ack()
	}
	go sink.drain(0, ch)
	publishSeq(ctx, pub, rm, 2*rm, 1, msg, nil).check(t, "publish the second window")
	if err := pub.Publish(ctx, PublishOptions{Topic: topic, QoS: 2, Payload: []byte(endMarker)}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ok := sink.waitFor(wctx, func() bool { return sink.marked(0) && sink.allSeen() })
	st := sub.Stats()
	if !ok {
		t.Fatalf("after the reconnection: %s; the subscriber lost its connection %d times", sink.summary(), st.ConnectionLost)
	}
	if st.ConnectionLost != 1 {
		t.Errorf("the subscriber lost its connection %d times, want 1 (the cut)", st.ConnectionLost)
	}
	if d := sink.dups(); d != ([3]int{}) {
		t.Errorf("duplicates by QoS %v, want none", d)
	}
}

// Mosquitto 2.0.11 sends more QoS 2 messages than a subscriber's Receive Maximum allows once
// PUBCOMPs flow (seen: 6 awaiting PUBCOMP with a Receive Maximum of 2). A subscriber with a
// small window must still get every message exactly once, whatever it does about the overrun,
// and must not end up reconnecting for ever: on a resumed session the broker resends its
// whole in-flight set, over the window again, on every new connection.
func TestFaultQoS2SmallReceiveMaximum(t *testing.T) {
	const total = 3000
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	brokerLogOnFailure(t, b)
	ctx := faultCtx(t, time.Minute)
	const topic = "fault/small-window"

	sub := newTestClient(t, b.URL, WithClientID("fault-small-window-sub"), WithSessionExpiry(time.Hour),
		WithReceiveMaximum(10), fastReconnect(), failureLog(t, "subscriber"))
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: topic, QoS: 2}}, SubAutoAck())
	if err != nil {
		t.Fatal(err)
	}
	sink := newSeqSink(total, 1)
	go sink.drain(0, ch)
	pub := newTestClient(t, b.URL)
	publishSeq(ctx, pub, 0, total, 8, func(int) PublishOptions { return PublishOptions{Topic: topic, QoS: 2} }, nil).
		check(t, "publish")
	if err := pub.Publish(ctx, PublishOptions{Topic: topic, QoS: 2, Payload: []byte(endMarker)}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ok := sink.waitFor(wctx, func() bool { return sink.marked(0) && sink.allSeen() })
	st := sub.Stats()
	if !ok {
		t.Fatalf("%s; the subscriber lost its connection %d times", sink.summary(), st.ConnectionLost)
	}
	t.Logf("the subscriber lost its connection %d times (received %d PUBLISH for %d messages)", st.ConnectionLost, st.Received, total+1)
	if d := sink.dups(); d != ([3]int{}) {
		t.Errorf("duplicates by QoS %v, want none", d)
	}
}

// A QoS 2 message whose delivery is blocked on a full subscription buffer when the
// connection drops must still reach the application once: the broker sends it again on the
// resumed session, and the client must not take that resend for a duplicate of a message it
// never delivered.
func TestFaultSubscriberCutWhileDeliveryBlocked(t *testing.T) {
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	proxy := faultproxy.New(t, b.Addr)
	ctx := faultCtx(t, time.Minute)
	const topic = "fault/blocked"

	// While the read loop is blocked in a delivery it reads nothing, so the cut is found by
	// keepalive: PINGREQ goes out and PINGRESP never comes.
	life := newLifecycle()
	sub := newTestClient(t, proxy.URL(), append([]Option{WithClientID("fault-blocked-sub"), WithCleanStart(false),
		WithSessionExpiry(time.Hour), WithKeepAlive(time.Second), WithPingTimeout(500 * time.Millisecond),
		fastReconnect()}, life.options()...)...)
	life.waitUp(t, 10*time.Second, "connect")
	// Room for one message: the first fills the buffer, the second blocks the read loop.
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: topic, QoS: 2}}, SubBuffer(1))
	if err != nil {
		t.Fatal(err)
	}
	pub := newTestClient(t, b.URL)
	publishSeq(ctx, pub, 0, 3, 1, func(int) PublishOptions { return PublishOptions{Topic: topic, QoS: 2} }, nil).
		check(t, "publish")
	// Received counts a PUBLISH before it is routed, and the buffer is full after the first,
	// so at 2 the second message is being delivered and cannot get in.
	waitCond(t, 10*time.Second, "second message read", func() bool { return sub.Stats().Received >= 2 })

	proxy.Refuse(true)
	proxy.Cut()
	life.waitDown(t, 10*time.Second, "cut")
	proxy.Refuse(false)
	if i := life.waitUp(t, 10*time.Second, "reconnect"); !i.SessionPresent {
		t.Fatal("the broker did not keep the subscriber's session")
	}

	// The marker queues behind the three messages: once it is in, any resend is too.
	if err := pub.Publish(ctx, PublishOptions{Topic: topic, QoS: 2, Payload: []byte(endMarker)}); err != nil {
		t.Fatal(err)
	}
	sink := newSeqSink(3, 1)
	go sink.drain(0, ch)
	mctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if !sink.waitFor(mctx, func() bool { return sink.marked(0) }) {
		t.Fatalf("no end marker after the reconnection: %s", sink.summary())
	}
	if m := sink.missing(); len(m) > 0 {
		t.Errorf("QoS 2 messages never delivered: %v (%s)", m, sink.summary())
	}
	if d := sink.dups(); d != ([3]int{}) {
		t.Errorf("duplicates by QoS %v, want none", d)
	}
}

// A connection that breaks while the read loop is blocked on a full subscription buffer is
// found dead by keepalive even when the first write to find the break is not a PINGREQ: the
// read loop cannot see the end of the stream, so the write side must report it.
func TestFaultDeadConnectionWhileReaderBlocked(t *testing.T) {
	const (
		keepAlive   = 2 * time.Second
		pingTimeout = 500 * time.Millisecond
		slack       = 2 * time.Second
	)
	b := brokertest.StartMosquitto(t, brokertest.Config{})
	proxy := faultproxy.New(t, b.Addr)
	ctx := faultCtx(t, time.Minute)
	const topic = "fault/reader-blocked"

	life := newLifecycle()
	sub := newTestClient(t, proxy.URL(), append([]Option{WithClientID("fault-reader-blocked"),
		WithSessionExpiry(time.Hour), WithKeepAlive(keepAlive), WithPingTimeout(pingTimeout),
		fastReconnect(), failureLog(t, "subscriber")}, life.options()...)...)
	life.waitUp(t, 10*time.Second, "connect")
	ch, _, err := sub.Subscribe(ctx, []TopicFilter{{Topic: topic, QoS: 1}}, SubBuffer(1))
	if err != nil {
		t.Fatal(err)
	}
	pub := newTestClient(t, b.URL)
	publishSeq(ctx, pub, 0, 4, 1, func(int) PublishOptions { return PublishOptions{Topic: topic, QoS: 1} }, nil).
		check(t, "publish")
	// Take the first message (not acknowledged yet): the second fills the buffer and the
	// read loop blocks delivering the third.
	first := recv(t, ch)
	waitCond(t, 10*time.Second, "third message read", func() bool { return sub.Stats().Received >= 3 })

	proxy.Cut()
	cutAt := time.Now()
	// Writes from the application now find the broken connection: the acknowledgement,
	// then publishes until the writer reports the failure.
	first.Ack()
	var down *downEvent
probe:
	for i := 0; ; i++ {
		select {
		case e := <-life.down:
			down = &e // found at once: the client may be connected again already
			break probe
		default:
		}
		if i == 100 {
			t.Fatal("writes to the cut connection never failed")
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := sub.Publish(pctx, PublishOptions{Topic: "fault/reader-blocked/probe"})
		if err == nil {
			err = sub.Flush(pctx)
		}
		cancel()
		if err != nil {
			break
		}
	}
	if down == nil {
		select {
		case e := <-life.down:
			down = &e
		case <-time.After(keepAlive + pingTimeout + 10*time.Second):
			t.Errorf("the broken connection was never declared dead while the read loop was blocked")
		}
	}
	if down != nil {
		if d, limit := down.at.Sub(cutAt), keepAlive+pingTimeout+slack; d > limit {
			t.Errorf("dead connection found after %v, want within %v", d, limit)
		} else {
			t.Logf("dead connection found after %v: %v", d.Round(time.Millisecond), down.err)
		}
	}
	// Unblock the read loop and check that everything arrives once the client is back.
	sink := newSeqSink(4, 1)
	go sink.drain(0, ch)
	if err := pub.Publish(ctx, PublishOptions{Topic: topic, QoS: 1, Payload: []byte(endMarker)}); err != nil {
		t.Fatal(err)
	}
	sink.record(0, first)
	sink.waitAll(t, 20*time.Second, 0)
}

// Disconnect returns by the time its ctx ends even when the connection is stalled, with
// publishes waiting for acknowledgements or the writer stuck on a full socket, and leaves no
// goroutine behind.
func TestDisconnectAlwaysReturnsByCtx(t *testing.T) {
	const (
		budget = 200 * time.Millisecond
		// Scheduling on a loaded 2-core machine under -race: Disconnect was seen returning
		// 94 ms after its ctx ended, a third of the 300 ms this slack used to be.
		// A Disconnect that ignored its ctx would take the flush timeout (a minute here) or
		// the connect timeout (20 s), so 2 s still tells the two apart.
		slack = 2 * time.Second
	)
	for _, writerStuck := range []bool{false, true} {
		name := "acks pending"
		if writerStuck {
			name = "writer stuck"
		}
		t.Run(name, func(t *testing.T) {
			b := brokertest.StartMosquitto(t, brokertest.Config{})
			proxy := faultproxy.New(t, b.Addr)
			ctx := faultCtx(t, time.Minute)
			c := newTestClient(t, proxy.URL(), WithWriteBuffer(64<<10), WithDisconnectFlushTimeout(time.Minute))
			if err := c.Publish(ctx, PublishOptions{Topic: "fault/disc", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			proxy.Stall()

			if writerStuck {
				// Fill the socket and the proxy's buffers until a flush cannot complete:
				// the writer is then blocked in a write to a peer that reads nothing.
				payload := make([]byte, 32<<10)
				stuck := false
				for i := 0; i < 4096 && !stuck; i++ { // 128 MiB at most; a few MiB suffice
					pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
					err := c.Publish(pctx, PublishOptions{Topic: "fault/disc/big", Payload: payload})
					if err == nil {
						err = c.Flush(pctx)
					}
					cancel()
					switch {
					case errors.Is(err, context.DeadlineExceeded):
						stuck = true
					case err != nil:
						t.Fatal(err)
					}
				}
				if !stuck {
					t.Fatal("the writer never blocked on the stalled connection")
				}
			}

			// Publishes that cannot complete: they wait for acknowledgements (or, with the
			// writer stuck, for room in the write buffer).
			const blocked = 5
			sent := c.Stats().PublishSent
			var wg sync.WaitGroup
			errs := make(chan error, blocked)
			for range blocked {
				wg.Go(func() { errs <- c.Publish(ctx, PublishOptions{Topic: "fault/disc", QoS: 1}) })
			}
			// Handed to the writer (with the writer stuck, appended behind what it holds).
			waitCond(t, 10*time.Second, "publishes handed to the writer", func() bool { return c.Stats().PublishSent >= sent+blocked })

			dctx, cancel := context.WithTimeout(context.Background(), budget)
			defer cancel()
			start := time.Now()
			err := c.Disconnect(dctx)
			took := time.Since(start)
			t.Logf("Disconnect returned %v after %v", err, took.Round(time.Millisecond))
			if took > budget+slack {
				t.Errorf("Disconnect took %v with a ctx of %v", took, budget)
			}

			// Everything waiting on the client ends, and so does every goroutine it started.
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("publishes still blocked 10s after Disconnect")
			}
			close(errs)
			for err := range errs {
				if err == nil || !(errors.Is(err, ErrClosed) || errors.Is(err, ErrConnectionLost)) {
					t.Errorf("blocked publish returned %v, want ErrClosed", err)
				}
			}
			if left := waitGoroutines(5 * time.Second); left != "" {
				t.Errorf("goroutines left 5s after Disconnect:\n%s", firstStacks(left, 3))
			}
		})
	}

	// Disconnect while Connect is still waiting for a CONNACK that will never come: both
	// return promptly and nothing keeps running.
	t.Run("connect in progress", func(t *testing.T) {
		b := brokertest.StartMosquitto(t, brokertest.Config{})
		proxy := faultproxy.New(t, b.Addr)
		proxy.BlackHole(true)
		c, err := New(WithBroker(proxy.URL()), WithConnectTimeout(20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		connected := make(chan error, 1)
		go func() { connected <- c.Connect(context.Background()) }()
		wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := proxy.WaitAccepted(wctx, 1); err != nil {
			t.Fatal("Connect never dialled")
		}

		dctx, cancel := context.WithTimeout(context.Background(), budget)
		defer cancel()
		start := time.Now()
		err = disconnectRecover(c, dctx)
		took := time.Since(start)
		t.Logf("Disconnect returned %v after %v", err, took.Round(time.Millisecond))
		if took > budget+slack {
			t.Errorf("Disconnect took %v with a ctx of %v", took, budget)
		}
		var perr panicError
		if errors.As(err, &perr) {
			t.Errorf("Disconnect panicked while Connect was in progress: %v", perr.v)
		}
		// Connect gives up because the client is closed, long before its own timeout.
		select {
		case err := <-connected:
			if err == nil {
				t.Errorf("Connect succeeded on a client disconnected meanwhile")
			}
		case <-time.After(5 * time.Second):
			proxy.Close() // end the attempt, so the goroutine ends with the test
			<-connected
			t.Errorf("Connect still waiting 5s after Disconnect")
		}
		if left := waitGoroutines(5 * time.Second); left != "" {
			t.Errorf("goroutines left 5s after Disconnect:\n%s", firstStacks(left, 3))
		}
	})
}

// panicError carries a recovered panic.
type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprint("panic: ", p.v) }

// disconnectRecover calls Disconnect and turns a panic into an error, so that a client bug
// fails this test instead of killing the whole test binary.
func disconnectRecover(c *Client, ctx context.Context) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicError{v}
		}
	}()
	return c.Disconnect(ctx)
}

// waitCond polls cond until it holds or d passes, then fails t. For conditions that only a
// counter shows; the polling interval is pacing, not synchronisation.
func waitCond(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// firstStacks returns the first n goroutine stacks of a dump.
func firstStacks(dump string, n int) string {
	stacks := strings.Split(dump, "\n\n")
	if len(stacks) > n {
		stacks = append(stacks[:n], fmt.Sprintf("... and %d more", len(stacks)-n))
	}
	return strings.Join(stacks, "\n\n")
}
