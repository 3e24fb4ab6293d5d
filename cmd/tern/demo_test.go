package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/cmd/tern/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m, "ternmq/tern", "mochi-mqtt") }

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
		{[]string{"pub"}, 2, "not yet implemented"},
		{[]string{"sub"}, 2, "not yet implemented"},
		{[]string{"bench"}, 2, "not yet implemented"},
		{[]string{"run"}, 2, "not yet implemented"},
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
