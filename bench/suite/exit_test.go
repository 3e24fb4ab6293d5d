package suite

import (
	"regexp"
	"strings"
	"testing"
)

// failAtExitEnv makes the test binary, serving as a child, exit 66 after its result.
const failAtExitEnv = "TERN_SUITE_TEST_FAIL_AT_EXIT"

// TestChildExitStatus: a child whose process fails after it sent a good result (the race
// detector reporting at exit does that) fails the run, with the child's output in the error.
func TestChildExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and child processes")
	}
	t.Setenv(failAtExitEnv, "1")
	s, err := New(Options{Quick: true, Only: regexp.MustCompile(`^pub-q0-64B$`)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Run()
	if len(s.Results) == 0 {
		t.Fatal("no results")
	}
	for _, r := range s.Results {
		if r.Skipped != "" {
			continue
		}
		if r.OK() || !strings.Contains(r.Err, "exit status 66") || !strings.Contains(r.Err, "failing at exit as asked") {
			t.Errorf("%s/%s: ok %v, err %q; want the run failed by the child's exit status and its output",
				r.Scenario, r.Lib, r.OK(), r.Err)
		}
	}
}

// TestCountersQuick: every library's row carries the child's system calls and context
// switches, and Mosquitto's CPU over the same span.
func TestCountersQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and child processes")
	}
	s, err := New(Options{Quick: true, Only: regexp.MustCompile(`^recv-q1-callback-64B$`)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Run()
	for _, r := range s.Results {
		if !r.OK() {
			t.Errorf("%s/%s: %s", r.Scenario, r.Lib, r.Err)
			continue
		}
		// Receiving QoS 1 takes at least one read and makes at least one write (PUBACKs);
		// the broker works for every message.
		if r.Child.ReadCalls <= 0 || r.Child.WriteCalls <= 0 || r.Child.CtxSwitches <= 0 || r.ReadsPer <= 0 {
			t.Errorf("%s/%s: reads %d writes %d switches %d", r.Scenario, r.Lib,
				r.Child.ReadCalls, r.Child.WriteCalls, r.Child.CtxSwitches)
		}
		if r.Child.BrokerNs < 0 {
			t.Errorf("%s/%s: broker CPU %d ns", r.Scenario, r.Lib, r.Child.BrokerNs)
		}
	}
}
