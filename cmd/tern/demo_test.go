package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/cmd/tern/internal/leakcheck"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" { // re-executed as the tern command (spool_test.go)
		os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
	}
	leakcheck.Main(m, "ternmq/tern", "mochi-mqtt", "coder/websocket")
}

// The demo, in process, on the embedded broker: cuts and a restart lose nothing.
func TestDemo(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  demoConfig
	}{
		{"qos12", demoConfig{Messages: 2000, QoS: 12, Cuts: 2, Restart: true}},
		{"qos1", demoConfig{Messages: 1000, QoS: 1, Cuts: 2, Restart: true}},
		{"qos2", demoConfig{Messages: 1000, QoS: 2, Cuts: 2, Restart: true}},
		{"no-faults", demoConfig{Messages: 1000, QoS: 12}},
		{"small-window", demoConfig{Messages: 1000, QoS: 12, Cuts: 1, Restart: true, MaxInflight: 16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cfg := tc.cfg
			cfg.Wait = 30 * time.Second
			rep, err := runDemo(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			rep.print(&out)
			t.Log("\n" + out.String())
			if rep.Lost != 0 || rep.Received != cfg.Messages || rep.Stalled != "" {
				t.Fatalf("lost %d, received %d of %d, stopped: %q", rep.Lost, rep.Received, cfg.Messages, rep.Stalled)
			}
			restarts := 0
			if cfg.Restart {
				restarts = 1
			}
			if rep.Cuts != cfg.Cuts || rep.Restarts != restarts {
				t.Errorf("faults made: %d cuts, %d restarts; want %d, %d", rep.Cuts, rep.Restarts, cfg.Cuts, restarts)
			}
			if rep.Foreign != 0 || rep.RxSessionLost != 0 {
				t.Errorf("foreign messages %d, receiver sessions lost %d", rep.Foreign, rep.RxSessionLost)
			}
		})
	}
}

func TestPlanFaults(t *testing.T) {
	ev := planFaults(6000, 5, true)
	if len(ev) != 6 {
		t.Fatalf("%d events, want 6", len(ev))
	}
	var cuts, restarts int
	for i, e := range ev {
		if i > 0 && e.at <= ev[i-1].at {
			t.Errorf("events not strictly increasing: %+v", ev)
		}
		if e.at <= 0 || e.at >= 6000 {
			t.Errorf("event outside the run: %+v", e)
		}
		if e.restart {
			restarts++
		} else {
			cuts++
		}
	}
	if cuts != 5 || restarts != 1 {
		t.Errorf("%d cuts, %d restarts", cuts, restarts)
	}
	if ev := planFaults(100, 0, false); len(ev) != 0 {
		t.Errorf("no faults asked, got %+v", ev)
	}
}

func TestDispatch(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		status int
		out    string // in stdout or stderr
	}{
		{nil, 2, "Usage:"},
		{[]string{"help"}, 0, "Commands:"},
		{[]string{"help", "demo"}, 0, "-messages"},
		{[]string{"demo", "-h"}, 0, "-cuts"},
		{[]string{"serve", "-h"}, 0, "-max-inflight"},
		{[]string{"pub"}, 2, "-t TOPIC is required"},
		{[]string{"sub"}, 2, "-t FILTER is required"},
		{[]string{"help", "pub"}, 0, "--user-property KEY=VALUE"},
		{[]string{"help", "sub"}, 0, "-W, --timeout SECONDS"},
		{[]string{"pub", "--help"}, 0, "-h, --host HOST"},
		{[]string{"version"}, 0, "tern devel (go1."},
		{[]string{"bench"}, 2, "name a workload"},
		{[]string{"help", "bench"}, 0, "--connect-rate PER_SECOND"},
		{[]string{"run"}, 2, "no scenario file"},
		{[]string{"nope"}, 2, "unknown command"},
		{[]string{"demo", "--qos", "3"}, 2, "--qos"},
		{[]string{"serve", "--addr", "0.0.0.0:1883"}, 2, "loopback"},
	} {
		var stdout, stderr bytes.Buffer
		st := dispatch(tc.args, &stdout, &stderr)
		if st != tc.status || !strings.Contains(stdout.String()+stderr.String(), tc.out) {
			t.Errorf("tern %v: status %d, output %q; want %d and %q", tc.args, st, stdout.String()+stderr.String(), tc.status, tc.out)
		}
	}
}

// stallingPublisher accepts `after` messages, then fails every Publish with err or, when err
// is nil, blocks it until its ctx ends (a publisher that stopped making progress).
type stallingPublisher struct {
	queuePublisher
	after int64
	err   error
	n     atomic.Int64
}

func (p *stallingPublisher) Publish(ctx context.Context, m tern.PublishOptions) error {
	if p.n.Add(1) <= p.after {
		return p.queuePublisher.Publish(ctx, m)
	}
	if p.err != nil {
		return p.err
	}
	<-ctx.Done()
	return ctx.Err()
}

// runDemoWithHook runs "tern demo args..." with wrap injected, bounded by limit, and
// returns the exit status and the output.
func runDemoWithHook(t *testing.T, wrap func(queuePublisher) queuePublisher, limit time.Duration, args ...string) (int, string) {
	t.Helper()
	demoWrapHook = wrap
	defer func() { demoWrapHook = nil }()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- dispatch(append([]string{"demo"}, args...), &stdout, &stderr) }()
	select {
	case st := <-done:
		return st, stdout.String() + stderr.String()
	case <-time.After(limit):
		t.Fatalf("tern demo %v did not end within %v", args, limit)
		return 0, ""
	}
}

// A demo whose publishing fails part-way must not pass: the 300 messages accepted all
// arrive, but 200 of the 500 asked for were never published.
func TestDemoFailsWhenPublishFails(t *testing.T) {
	wrap := func(qp queuePublisher) queuePublisher {
		return &stallingPublisher{queuePublisher: qp, after: 300, err: errors.New("injected failure")}
	}
	st, out := runDemoWithHook(t, wrap, time.Minute,
		"--messages", "500", "--cuts", "0", "--restart=false", "--wait", "10s")
	t.Log("\n" + out)
	if st != 1 || strings.Contains(out, "PASS") || !strings.Contains(out, "FAIL:") ||
		!strings.Contains(out, "injected failure") || !strings.Contains(out, "only 300 of 500 messages accepted") {
		t.Fatalf("status %d; want 1, FAIL naming the publish error and the accepted count", st)
	}
}

// A demo whose publishing stalls must end within the progress deadline with FAIL, the
// reason and the counts, not hang or pass.
func TestDemoFailsWhenPublishingStalls(t *testing.T) {
	wrap := func(qp queuePublisher) queuePublisher {
		return &stallingPublisher{queuePublisher: qp, after: 200}
	}
	st, out := runDemoWithHook(t, wrap, time.Minute,
		"--messages", "500", "--cuts", "0", "--restart=false", "--wait", "500ms")
	t.Log("\n" + out)
	if st != 1 || strings.Contains(out, "PASS") ||
		!strings.Contains(out, "FAIL: stopped early: no progress for 500ms while 300 of 500 messages remain: accepted 200, acknowledged 200, received 200") {
		t.Fatalf("status %d; want 1 and FAIL with the stall and its counts", st)
	}
}

// lost is a set difference: a receiver that got as many distinct messages as were accepted,
// but not the same ones, lost some.
func TestDemoLostIsSetDifference(t *testing.T) {
	tl := newTally(7, 5)
	for _, seq := range []int{1, 2, 3, 4} {
		tl.accept(seq)
	}
	for _, seq := range []uint64{1, 2, 2, 4, 5} { // 3 missing, 2 twice, 5 never accepted
		payload := make([]byte, 16)
		binary.BigEndian.PutUint64(payload, seq)
		binary.BigEndian.PutUint64(payload[8:], 7)
		tl.add(&tern.Message{Payload: payload})
	}
	rep := &demoReport{Wanted: 4, Sent: 4, seqCount: tl.compare()}
	if rep.Received != 4 || rep.Lost != 1 || !slices.Equal(rep.LostSeqs, []int{3}) ||
		rep.Duplicates != 1 || rep.Unexpected != 1 {
		t.Fatalf("report %+v; want received 4, lost [3], 1 duplicate, 1 unexpected", rep.seqCount)
	}
	var out bytes.Buffer
	rep.print(&out)
	if !strings.Contains(out.String(), "FAIL: 1 of 4 accepted messages lost") ||
		!strings.Contains(out.String(), "seq 3") {
		t.Fatalf("report:\n%s", out.String())
	}
}

// "tern help X" goes to stdout, errors to stderr.
func TestHelpOnStdout(t *testing.T) {
	for _, name := range []string{"pub", "sub", "demo", "serve"} {
		var stdout, stderr bytes.Buffer
		if st := dispatch([]string{"help", name}, &stdout, &stderr); st != 0 || stderr.Len() != 0 || !strings.Contains(stdout.String(), "Usage: tern "+name) {
			t.Errorf("help %s: status %d, stdout %q, stderr %q", name, st, stdout.String(), stderr.String())
		}
	}
}
