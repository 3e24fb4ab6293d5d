package suite

import (
	"bytes"
	"strings"
	"testing"
)

func TestPercentile(t *testing.T) {
	s := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		p    float64
		want int64
	}{{0.5, 5}, {0.99, 10}, {0.1, 1}, {0, 1}, {1, 10}} {
		if got := percentile(s, tc.p); got != tc.want {
			t.Errorf("percentile(%v) = %d, want %d", tc.p, got, tc.want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing")
	}
}

func TestRowsAndReport(t *testing.T) {
	var rs []Result
	add := func(sc, lib string, run int, thr, cpu float64, err string) {
		rs = append(rs, Result{Scenario: sc, Lib: lib, Run: run, MsgPerSec: thr, CPUUsPerMsg: cpu, Err: err})
	}
	for run, f := range []float64{1, 3, 2} {
		add("pub-q0-64B", "tern", run+1, 100*f, 1*f, "")
		add("pub-q0-64B", "autopaho", run+1, 50*f, 8*f, "")
		add("pub-q0-64B", "raw", run+1, 100*f, 0.5*f, "")
	}
	add("pub-q0-64B", "paho3", 1, 10, 10, "3 of 100 missing")
	rows := Rows(rs)
	if len(rows) != 4 || rows[0].Lib != "tern" || rows[1].Lib != "autopaho" || rows[2].Lib != "paho3" {
		t.Fatalf("rows %+v", rows)
	}
	if rows[0].MsgPerSec != 200 || rows[0].CPUUsPerMsg != 2 || rows[0].Runs != 3 {
		t.Fatalf("tern medians %+v", rows[0])
	}
	if rows[2].Failed != 1 || len(rows[2].Errors) != 1 {
		t.Fatalf("paho3 failure not kept: %+v", rows[2])
	}
	var b bytes.Buffer
	WriteMarkdown(&b, rows, "test")
	out := b.String()
	for _, want := range []string{
		"| pub-q0-64B | 2.00 | – | 1.00 | 0.12 | – | 2.00 |", // paho3 failed every run
		"FAILED 1 of 1 runs",
		"| QoS 0 publish 64 B: throughput vs raw | ≥ 0.95× | 1.00× | yes |",
		"| QoS 0 publish 64 B: CPU/msg vs autopaho | ≤ 0.25× | 0.12× | yes |",
		"| QoS 2 publish 64 B: CPU/msg vs autopaho | ≤ 0.60× | not measured | – |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestScenarioCounts(t *testing.T) {
	names := make(map[string]bool)
	for _, sc := range Scenarios() {
		if names[sc.Name] {
			t.Errorf("scenario %s twice", sc.Name)
		}
		names[sc.Name] = true
		for _, l := range sc.Libs {
			if sc.count(l, true) <= 0 || sc.count(l, false) < sc.count(l, true) {
				t.Errorf("%s/%s: counts %d quick, %d full", sc.Name, l.Name, sc.count(l, true), sc.count(l, false))
			}
		}
		if sc.Size < 40 {
			t.Errorf("%s: payload %d too small to stamp", sc.Name, sc.Size)
		}
	}
}
