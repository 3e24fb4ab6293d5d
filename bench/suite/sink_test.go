package suite

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// TestSinksQuick runs a synchronous and a pipelined QoS 1 publish scenario and the
// reconnect scenario in quick mode with each sink other than the default (which every
// other quick test uses): every library's messages must reach the sink exactly once and
// intact, the result must say which sink took them and what that cost, and the report's
// conditions must name the sink.
func TestSinksQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and child processes")
	}
	for _, sink := range []string{SinkPerAck, SinkProc} {
		t.Run(sink, func(t *testing.T) {
			s, err := New(Options{Quick: true, Sink: sink,
				Only: regexp.MustCompile(`^(pub-q1-64B|pipe-q1-64B|reconnect-q1-64B)$`)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.Run()
			seen := map[string]int{}
			for _, r := range s.Results {
				seen[r.Scenario]++
				key := r.Scenario + "/" + r.Lib
				if !r.OK() || r.Skipped != "" {
					t.Errorf("%s: err %q skipped %q", key, r.Err, r.Skipped)
					continue
				}
				if r.Counts.Unique != uint64(r.N) || r.Counts.Missing() != 0 {
					t.Errorf("%s: %d of %d unique", key, r.Counts.Unique, r.N)
				}
				if r.Sink != sink || r.SinkCPUUsPerMsg <= 0 {
					t.Errorf("%s: sink %q, %.3f µs/msg of sink CPU; want %q and a cost", key, r.Sink,
						r.SinkCPUUsPerMsg, sink)
				}
				// QoS 1 at the sink: one PUBACK per message, each in a write of its own (a
				// reconnect may redeliver, and each copy is acknowledged).
				if r.SinkAckWrites != int64(r.N+int(r.Counts.Duplicates)) {
					t.Errorf("%s: %d acknowledgement writes for %d messages and %d duplicates", key,
						r.SinkAckWrites, r.N, r.Counts.Duplicates)
				}
				if (r.SinkChild != nil) != (sink == SinkProc) {
					t.Errorf("%s: sink child %v with sink %s", key, r.SinkChild != nil, sink)
				}
				if r.Scenario != "reconnect-q1-64B" && r.MsgPerSec <= 0 {
					t.Errorf("%s: %.0f msg/s", key, r.MsgPerSec)
				}
			}
			for _, sc := range []string{"pub-q1-64B", "pipe-q1-64B", "reconnect-q1-64B"} {
				if seen[sc] == 0 {
					t.Errorf("no result for %s", sc)
				}
			}
			var b bytes.Buffer
			WriteMarkdown(&b, Rows(s.Results), Conditions(1, true, sink))
			if want := "; sink " + sink + " (" + SinkInfo(sink) + ")"; !strings.Contains(b.String(), want) {
				t.Errorf("conditions lack %q:\n%s", want, b.String())
			}
			if !strings.Contains(b.String(), "sink CPU ") {
				t.Errorf("report shows no sink CPU:\n%s", b.String())
			}
		})
	}
}

// TestSinkName checks that an unknown sink is refused before anything starts, and that the
// default is the raw in-process sink.
func TestSinkName(t *testing.T) {
	if _, err := New(Options{Sink: "nosuch"}); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Fatalf("New with sink nosuch: %v", err)
	}
	if c := Conditions(1, true, ""); !strings.HasSuffix(c, "; sink raw ("+SinkInfo(SinkRaw)+")") {
		t.Fatalf("default conditions %q", c)
	}
}
