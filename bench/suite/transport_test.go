package suite

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// TestTransportScenariosQuick runs the WebSocket-beside-TCP scenarios end to end in quick
// mode: tern over TCP and over WebSocket, on the suite's embedded mochi broker, each
// delivering every message exactly once and intact, and the report giving their ratio.
func TestTransportScenariosQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts brokers and child processes")
	}
	s, err := New(Options{Quick: true, Only: regexp.MustCompile(`^ws-`)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Run()
	want := map[string]bool{}
	for _, sc := range []string{"ws-pub-q1-64B", "ws-pipe-q1-64B", "ws-recv-q0-64B"} {
		want[sc+"/tern-tcp"], want[sc+"/tern-ws"] = true, true
	}
	for _, r := range s.Results {
		key := r.Scenario + "/" + r.Lib
		if !want[key] {
			t.Errorf("unexpected row %s", key)
			continue
		}
		delete(want, key)
		if !r.OK() || r.Skipped != "" {
			t.Errorf("%s: err %q skipped %q", key, r.Err, r.Skipped)
		}
		if r.Counts.Unique != uint64(r.N) || r.Counts.Duplicates != 0 || r.MsgPerSec <= 0 {
			t.Errorf("%s: %d of %d unique, %d duplicates, %.0f msg/s", key, r.Counts.Unique, r.N,
				r.Counts.Duplicates, r.MsgPerSec)
		}
	}
	for key := range want {
		t.Errorf("no result for %s", key)
	}
	var b bytes.Buffer
	WriteMarkdown(&b, Rows(s.Results), "test")
	if !regexp.MustCompile(`\| ws-recv-q0-64B \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \|`).Match(b.Bytes()) {
		t.Errorf("no transport ratio for ws-recv-q0-64B:\n%s", b.String())
	}
}

// TestTransportReport checks the ratio table tern-ws ÷ tern-tcp from given rows.
func TestTransportReport(t *testing.T) {
	rs := []Result{
		{Scenario: "ws-pipe-q1-64B", Lib: "tern-tcp", Run: 1, MsgPerSec: 50000, CPUUsPerMsg: 10, AllocsPer: 4},
		{Scenario: "ws-pipe-q1-64B", Lib: "tern-ws", Run: 1, MsgPerSec: 40000, CPUUsPerMsg: 12, AllocsPer: 12},
		{Scenario: "ws-recv-q0-64B", Lib: "tern-tcp", Run: 1, MsgPerSec: 1, Err: "3 of 10 missing"},
		{Scenario: "ws-recv-q0-64B", Lib: "tern-ws", Run: 1, MsgPerSec: 1},
	}
	var b bytes.Buffer
	WriteMarkdown(&b, Rows(rs), "test")
	out := b.String()
	if !strings.Contains(out, "| ws-pipe-q1-64B | 0.80 | 1.20 | 3.00 |") {
		t.Errorf("report lacks the ws-pipe ratio:\n%s", out)
	}
	if strings.Contains(out, "| ws-recv-q0-64B | 1.00 |") {
		t.Errorf("ratio printed although tern-tcp failed every run:\n%s", out)
	}
}
