package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/cmd/tern/internal/broker"
	"github.com/ternmq/tern/internal/faultproxy"
)

// faultEvent is one fault, due once the publisher has had `at` messages acknowledged.
type faultEvent struct {
	at      int64
	restart bool // restart the broker; otherwise cut the proxied connections
}

// planFaults spreads cuts evenly over n messages, at n·i/(cuts+1), and puts the restart
// half-way between the two cuts nearest the middle, so no two faults coincide.
func planFaults(n, cuts int, restart bool) []faultEvent {
	var ev []faultEvent
	slots := int64(cuts + 1)
	for i := int64(1); i <= int64(cuts); i++ {
		ev = append(ev, faultEvent{at: int64(n) * i / slots})
	}
	if restart {
		at := int64(n) * (2*int64(cuts/2) + 1) / (2 * slots)
		ev = append(ev, faultEvent{at: at, restart: true})
	}
	// Few enough to sort by insertion.
	for i := 1; i < len(ev); i++ {
		for j := i; j > 0 && ev[j].at < ev[j-1].at; j-- {
			ev[j], ev[j-1] = ev[j-1], ev[j]
		}
	}
	return ev
}

// faultPlan makes the planned faults. The publishing loop calls due before each message:
// a fault is made once the receiver has got `at` messages, and publishing waits for it
// when it runs more than lead messages past that point, so every fault falls in the middle
// of the traffic, whatever the speed, and all of them happen before the last message.
type faultPlan struct {
	events []faultEvent
	next   int
	lead   int64
	px     *faultproxy.Proxy
	brk    *broker.Broker // nil: an external broker, never restarted
	rxUps  func() int64   // receiver connections so far; nil: do not hold the publisher back

	cuts, cutConns, restarts atomic.Int64
	restartErr               error
}

func newFaultPlan(n, cuts int, restart bool, px *faultproxy.Proxy, brk *broker.Broker, rxUps func() int64) *faultPlan {
	ev := planFaults(n, cuts, restart)
	return &faultPlan{events: ev, lead: max(1, int64(n)/int64(2*(len(ev)+1))), px: px, brk: brk, rxUps: rxUps}
}

// due makes the faults whose time has come before message seq is published. It waits,
// bounded by ctx and by limit without the receiver making progress, for the receiver to
// reach a fault's point when publishing is lead messages past it; it returns why it gave
// up, or "".
func (f *faultPlan) due(ctx context.Context, seq int64, received func() int64, limit time.Duration) string {
	for f.next < len(f.events) {
		e := f.events[f.next]
		if received() < e.at && seq <= e.at+f.lead {
			return "" // not yet, and publishing may go on meanwhile
		}
		why := waitProgress(ctx, limit, func() (int64, bool) {
			n := received()
			return n, n >= e.at
		}, "receiver")
		if why != "" {
			return why
		}
		if why := f.fire(ctx, e, limit); why != "" {
			return why
		}
		f.next++
	}
	return ""
}

// fire makes one fault. A cut waits for a connection to cut: right after a fault the
// publisher may still be reconnecting.
func (f *faultPlan) fire(ctx context.Context, e faultEvent, limit time.Duration) string {
	if e.restart {
		return f.restart(ctx, limit)
	}
	deadline := time.Now().Add(limit)
	for {
		if n := f.px.Cut(); n > 0 {
			f.cutConns.Add(int64(n))
			f.cuts.Add(1)
			return ""
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("no publisher connection to cut for %v", limit)
		}
		select {
		case <-ctx.Done():
			return "interrupted: " + ctx.Err().Error()
		case <-time.After(time.Millisecond):
		}
	}
}

// restart restarts the broker. With rxUps set, the publisher is kept away (the proxy
// refuses it) until the receiver has resumed its session: mochi 2.7.9 loses messages routed
// to a session while it is being taken over by a reconnecting client (it copies the old
// session's in-flight messages, and only afterwards points routing at the new connection;
// what arrives in between stays with the discarded session). See README.md.
func (f *faultPlan) restart(ctx context.Context, limit time.Duration) string {
	var ups int64
	if f.rxUps != nil {
		ups = f.rxUps()
		f.px.Refuse(true) // new connections are closed at once, as by a broker that is down
		defer f.px.Refuse(false)
	}
	if err := f.brk.Restart(); err != nil {
		f.restartErr = err
		return "broker restart: " + err.Error()
	}
	f.restarts.Add(1)
	if f.rxUps == nil {
		return ""
	}
	why := waitProgress(ctx, limit, func() (int64, bool) {
		n := f.rxUps()
		return n, n > ups
	}, "receiver reconnection")
	return why
}

// done returns the faults made so far.
func (f *faultPlan) done() (cuts, conns, restarts int) {
	return int(f.cuts.Load()), int(f.cutConns.Load()), int(f.restarts.Load())
}

// progress shows how the run goes on w: on a terminal one line redrawn ten times a second,
// otherwise a line every few seconds.
type progress struct {
	w       io.Writer
	tty     bool
	total   int
	cuts    int
	restart bool
	drawn   bool
}

func (p *progress) run(ctx context.Context, start time.Time, qp queuePublisher, tl *tally, f *faultPlan) {
	if p.w == nil {
		return
	}
	every := 2 * time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.draw(start, qp, tl, f) // the last state, before the report
			return
		case <-t.C:
			p.draw(start, qp, tl, f)
		}
	}
}

func (p *progress) draw(start time.Time, qp queuePublisher, tl *tally, f *faultPlan) {
	st := qp.Stats()
	got := tl.uniqueCount()
	_, dups, _ := tl.snapshot()
	cuts, _, restarts := f.done()
	elapsed := time.Since(start)
	rate := float64(got) / max(elapsed.Seconds(), 1e-9)
	restart := ""
	if p.restart {
		restart = fmt.Sprintf("  restart %d/1", restarts)
	}
	status := fmt.Sprintf("acked %d  received %d/%d  dup %d  cuts %d/%d%s  %.0f msg/s  %v",
		st.Delivered, got, p.total, dups, cuts, p.cuts, restart, rate, elapsed.Round(100*time.Millisecond))
	if !p.tty {
		fmt.Fprintf(p.w, "tern demo: %s\n", status)
		return
	}
	const width = 30
	done := width * got / max(p.total, 1)
	bar := strings.Repeat("#", done) + strings.Repeat("-", width-done)
	// \r returns to the line start; \x1b[K clears what a longer earlier line left behind.
	fmt.Fprintf(p.w, "\r[%s] %3d%%  %s\x1b[K", bar, 100*got/max(p.total, 1), status)
	p.drawn = true
}

// finish ends the redrawn line so the report starts on a fresh one.
func (p *progress) finish() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
	}
}
