package suite

import (
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Row is the median of one library's runs in one scenario.
type Row struct {
	Scenario    string   `json:"scenario"`
	Lib         string   `json:"lib"`
	Runs        int      `json:"runs"`
	Failed      int      `json:"failed"`
	Skipped     string   `json:"skipped,omitempty"`
	MsgPerSec   float64  `json:"msg_per_sec"`
	CPUUsPerMsg float64  `json:"cpu_us_per_msg"`
	AllocsPer   float64  `json:"allocs_per_msg"`
	BytesPer    float64  `json:"bytes_per_msg"`
	PeakHeapMiB float64  `json:"peak_heap_mib,omitempty"`
	P50Us       float64  `json:"p50_us,omitempty"`
	P99Us       float64  `json:"p99_us,omitempty"`
	ReconnectMs float64  `json:"reconnect_ms,omitempty"`
	Duplicates  uint64   `json:"duplicates,omitempty"`
	Overrun     int      `json:"broker_overrun,omitempty"` // worst over the runs
	SinkCPUUs   float64  `json:"sink_cpu_us_per_msg,omitempty"`
	BrokerCPU   float64  `json:"broker_cpu_us_per_msg,omitempty"`
	ReadsPer    float64  `json:"reads_per_msg"`
	WritesPer   float64  `json:"writes_per_msg"`
	CswPer      float64  `json:"ctx_switches_per_msg"`
	Errors      []string `json:"errors,omitempty"`
}

// Rows reduces results to medians, in scenario order then library order.
func Rows(results []Result) []Row {
	type key struct{ sc, lib string }
	var order []key
	groups := make(map[key][]Result)
	for _, r := range results {
		k := key{r.Scenario, r.Lib}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	rank := make(map[key]int)
	for i, sc := range Scenarios() {
		for j, l := range sc.Libs {
			rank[key{sc.Name, l.Name}] = i*100 + j
		}
	}
	slices.SortStableFunc(order, func(a, b key) int { return rank[a] - rank[b] })
	var rows []Row
	for _, k := range order {
		rs := groups[k]
		row := Row{Scenario: k.sc, Lib: k.lib, Runs: len(rs)}
		var ok []Result
		for _, r := range rs {
			if r.Skipped != "" {
				row.Skipped = r.Skipped
				continue
			}
			if r.OK() {
				ok = append(ok, r)
			} else {
				row.Failed++
				row.Errors = append(row.Errors, fmt.Sprintf("run %d: %s", r.Run, r.Err))
			}
			row.Duplicates += r.Counts.Duplicates
			row.Overrun = max(row.Overrun, r.BrokerOverrun)
		}
		if len(ok) == 0 && row.Skipped == "" {
			ok = rs // figures of failed runs, for what they are worth
		}
		med := func(f func(*Result) float64) float64 {
			v := make([]float64, len(ok))
			for i := range ok {
				v[i] = f(&ok[i])
			}
			return median(v)
		}
		row.MsgPerSec = med(func(r *Result) float64 { return r.MsgPerSec })
		row.CPUUsPerMsg = med(func(r *Result) float64 { return r.CPUUsPerMsg })
		row.AllocsPer = med(func(r *Result) float64 { return r.AllocsPer })
		row.BytesPer = med(func(r *Result) float64 { return r.BytesPer })
		row.PeakHeapMiB = med(func(r *Result) float64 { return r.PeakHeapMiB })
		row.P50Us = med(func(r *Result) float64 { return r.P50Us })
		row.P99Us = med(func(r *Result) float64 { return r.P99Us })
		row.ReconnectMs = med(func(r *Result) float64 { return r.ReconnectMs })
		row.SinkCPUUs = med(func(r *Result) float64 { return r.SinkCPUUsPerMsg })
		row.BrokerCPU = med(func(r *Result) float64 { return r.BrokerCPUPer })
		row.ReadsPer = med(func(r *Result) float64 { return r.ReadsPer })
		row.WritesPer = med(func(r *Result) float64 { return r.WritesPer })
		row.CswPer = med(func(r *Result) float64 { return r.CswPer })
		rows = append(rows, row)
	}
	return rows
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Conditions describes the machine and software a report was measured on, and the sink
// (Options.Sink; "" is SinkRaw) the publish scenarios were received by.
func Conditions(runs int, quick bool, sink string) string {
	mode := fmt.Sprintf("median of %d runs", runs)
	if quick {
		mode = "quick mode (small counts, 1 run): a correctness check, not a measurement"
	}
	if sink == "" {
		sink = SinkRaw
	}
	return fmt.Sprintf("%s %s/%s, %s, %s, %d CPUs (nproc), %s; %s; sink %s (%s)",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, mosquittoVersion(), cpuModel(),
		runtime.NumCPU(), time.Now().Format("2006-01-02"), mode, sink, SinkInfo(sink))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

func mosquittoVersion() string {
	out, _ := exec.Command("/usr/sbin/mosquitto", "-h").Output()
	if line, _, _ := strings.Cut(string(out), "\n"); strings.HasPrefix(line, "mosquitto version") {
		return "Mosquitto " + strings.TrimPrefix(line, "mosquitto version ")
	}
	return "Mosquitto (version unknown)"
}

func find(rows []Row, sc, lib string) *Row {
	for i := range rows {
		if rows[i].Scenario == sc && rows[i].Lib == lib {
			return &rows[i]
		}
	}
	return nil
}

// ratio formats a/b, or "–" when either is missing.
func ratio(a, b float64) string {
	if a <= 0 || b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// WriteMarkdown writes the results table, the ratio table and the target table.
func WriteMarkdown(w io.Writer, rows []Row, conditions string) {
	fmt.Fprintf(w, "Conditions: %s.\n\n", conditions)
	fmt.Fprintln(w, "| scenario | library | msg/s | CPU µs/msg | allocs/msg | B/msg | reads / writes / switches per msg | other |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		var other []string
		if r.P50Us > 0 {
			other = append(other, fmt.Sprintf("p50 %s µs, p99 %s µs", num(r.P50Us), num(r.P99Us)))
		}
		if r.ReconnectMs > 0 {
			other = append(other, fmt.Sprintf("all redelivered %s ms after the cut", num(r.ReconnectMs)))
		}
		if r.PeakHeapMiB > 0 {
			other = append(other, fmt.Sprintf("peak heap +%s MiB", num(r.PeakHeapMiB)))
		}
		if r.BrokerCPU > 0 {
			other = append(other, fmt.Sprintf("broker CPU %s µs/msg", num(r.BrokerCPU)))
		}
		if r.SinkCPUUs > 0 {
			other = append(other, fmt.Sprintf("sink CPU %s µs/msg", num(r.SinkCPUUs)))
		}
		if r.Overrun > 0 {
			other = append(other, fmt.Sprintf("broker had %d unacked to the sink (window %d)", r.Overrun, brokerWindow))
		}
		if r.Duplicates > 0 {
			other = append(other, fmt.Sprintf("%d duplicates", r.Duplicates))
		}
		if r.Failed > 0 {
			other = append(other, fmt.Sprintf("**FAILED %d of %d runs**", r.Failed, r.Runs))
		}
		if r.Skipped != "" {
			other = append(other, "skipped: "+r.Skipped)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s / %s / %s | %s |\n", r.Scenario, r.Lib, num(r.MsgPerSec),
			num(r.CPUUsPerMsg), num(r.AllocsPer), num(r.BytesPer), num(r.ReadsPer), num(r.WritesPer), num(r.CswPer),
			strings.Join(other, "; "))
	}

	fmt.Fprintln(w, "\nRatios, tern ÷ peer (throughput: above 1 is better for tern; CPU per message: below 1 is better):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | msg/s ÷autopaho | msg/s ÷paho3 | msg/s ÷raw | CPU ÷autopaho | CPU ÷paho3 | CPU ÷raw |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, sc := range Scenarios() {
		pairs := [][2]string{{rowTern, ""}, {rowTernV3, ""}}
		if sc.Kind == KindQueue {
			pairs = [][2]string{{"tern-memq", "memq"}, {"tern-fileq", "fileq"}}
		}
		for _, pr := range pairs {
			t := find(rows, sc.Name, pr[0])
			if t == nil {
				continue
			}
			name := sc.Name
			if pr[0] == rowTernV3 {
				name += " (tern-v3, MQTT 3.1.1)"
			}
			cols := make([]string, 0, 6)
			peers := []string{rowAutopaho, rowPaho3, rowRaw}
			if pr[1] != "" {
				name += " (" + pr[1] + ")"
				peers = []string{"autopaho-" + pr[1], "", ""}
			}
			for _, metric := range []func(*Row) float64{
				func(r *Row) float64 { return r.MsgPerSec },
				func(r *Row) float64 { return r.CPUUsPerMsg },
			} {
				for _, peer := range peers {
					p := find(rows, sc.Name, peer)
					if p == nil || p.Failed == p.Runs || t.Failed == t.Runs || p.Skipped != "" || t.Skipped != "" {
						cols = append(cols, "–")
						continue
					}
					cols = append(cols, ratio(metric(t), metric(p)))
				}
			}
			fmt.Fprintf(w, "| %s | %s |\n", name, strings.Join(cols, " | "))
		}
	}
	fmt.Fprintln(w)
	if p, t := find(rows, poolScenario, rowTernPool), find(rows, poolScenario, rowTern); p != nil && t != nil {
		fmt.Fprintf(w, "Publisher pool (%s, broker window %d per connection): tern-pool4 ÷ tern msg/s = %s\n\n",
			poolScenario, brokerWindow, ratio(p.MsgPerSec, t.MsgPerSec))
	}
	writeTransport(w, rows)
	WriteTargets(w, rows)
}

// writeTransport prints what WebSocket costs beside TCP: tern-ws ÷ tern-tcp in each
// transport scenario (same mochi broker), when both rows have figures.
func writeTransport(w io.Writer, rows []Row) {
	var lines []string
	for _, sc := range transportScenarios() {
		ws, tcp := find(rows, sc.Name, rowTernWS), find(rows, sc.Name, rowTernTCP)
		if ws == nil || tcp == nil || ws.Failed == ws.Runs || tcp.Failed == tcp.Runs {
			continue
		}
		lines = append(lines, fmt.Sprintf("| %s | %s | %s | %s |", sc.Name,
			ratio(ws.MsgPerSec, tcp.MsgPerSec), ratio(ws.CPUUsPerMsg, tcp.CPUUsPerMsg),
			ratio(ws.AllocsPer, tcp.AllocsPer)))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w, "Transport, tern-ws ÷ tern-tcp on the same mochi broker (what WebSocket costs):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | msg/s | CPU µs/msg | allocs/msg |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w)
}

// target is one line of PRODUCT.md section 5 checked against the rows.
type target struct {
	what, want string
	measure    func(rows []Row) (got string, met, known bool)
}

// noTarget is the wanted value of a reference figure shown beside the targets: no verdict.
const noTarget = "–"

// metric returns a row's value, or false when the row is missing or failed.
func metric(rows []Row, sc, lib string, f func(*Row) float64) (float64, bool) {
	r := find(rows, sc, lib)
	if r == nil || r.Failed == r.Runs || r.Skipped != "" {
		return 0, false
	}
	return f(r), true
}

func thr(r *Row) float64    { return r.MsgPerSec }
func cpu(r *Row) float64    { return r.CPUUsPerMsg }
func allocs(r *Row) float64 { return r.AllocsPer }

// ratioTarget checks f(tern row)/f(peer row) against limit; below means lower is better.
func ratioTarget(sc, tern, peer string, f func(*Row) float64, limit float64, below bool) func([]Row) (string, bool, bool) {
	return func(rows []Row) (string, bool, bool) {
		a, ok1 := metric(rows, sc, tern, f)
		b, ok2 := metric(rows, sc, peer, f)
		if !ok1 || !ok2 || b == 0 {
			return "not measured", false, false
		}
		v := a / b
		if below {
			return fmt.Sprintf("%.2f×", v), v <= limit, true
		}
		return fmt.Sprintf("%.2f×", v), v >= limit, true
	}
}

func zeroAllocs(sc, lib string) func([]Row) (string, bool, bool) {
	return func(rows []Row) (string, bool, bool) {
		v, ok := metric(rows, sc, lib, allocs)
		if !ok {
			return "not measured", false, false
		}
		return num(v), v < 0.05, true
	}
}

func targets() []target {
	t := []target{
		{"QoS 0 publish 64 B: throughput vs raw", "≥ 0.95×", ratioTarget("pub-q0-64B", rowTern, rowRaw, thr, 0.95, false)},
		{"QoS 0 publish 64 B: CPU/msg vs autopaho", "≤ 0.25×", ratioTarget("pub-q0-64B", rowTern, rowAutopaho, cpu, 0.25, true)},
		{"QoS 0 publish 64 B: allocs/msg", "0", zeroAllocs("pub-q0-64B", rowTern)},
		{"QoS 1 publish, 64 goroutines: throughput vs raw", "≥ 0.90×", ratioTarget("conc64-q1-64B", rowTern, rowRaw, thr, 0.9, false)},
		{"QoS 1 publish, 64 goroutines: throughput vs autopaho", "≈ 1.7×", ratioTarget("conc64-q1-64B", rowTern, rowAutopaho, thr, 1.7, false)},
		{"QoS 1 publish, 64 goroutines: CPU/msg vs autopaho", "≤ 0.30×", ratioTarget("conc64-q1-64B", rowTern, rowAutopaho, cpu, 0.3, true)},
		{"QoS 1 publish, pipelined: throughput vs raw", "≥ 0.90×", ratioTarget("pipe-q1-64B", rowTern, rowRaw, thr, 0.9, false)},
		{"QoS 1 publish, pipelined: throughput vs autopaho", "≈ 1.7×", ratioTarget("pipe-q1-64B", rowTern, rowAutopaho, thr, 1.7, false)},
		{"QoS 1 publish, pipelined: CPU/msg vs autopaho", "≤ 0.30×", ratioTarget("pipe-q1-64B", rowTern, rowAutopaho, cpu, 0.3, true)},
		{"QoS 2 publish 64 B: CPU/msg vs autopaho", "≤ 0.60×", ratioTarget("pub-q2-64B", rowTern, rowAutopaho, cpu, 0.6, true)},
		{"receive QoS 0 zero-copy: allocs/msg", "0", zeroAllocs("recv-q0-callback-64B", rowTern)},
		{"receive QoS 1 zero-copy: allocs/msg", "0", zeroAllocs("recv-q1-callback-64B", rowTern)},
		{"receive QoS 2 with filestore vs memory store: throughput", "≥ 0.80×", ratioTarget("recv-q2-callback-64B", rowTernFileStore, rowTernMemStore, thr, 0.8, false)},
		{"durable queue: file queue throughput vs autopaho's file queue, 10,000 backlog", "≥ 100×", ratioTarget("backlog10k-q1-64B", "tern-fileq", "autopaho-fileq", thr, 100, false)},
		{"durable queue: file queue vs in-memory queue throughput", "≥ 0.90×", ratioTarget("queue-q1-64B", "tern-fileq", "tern-memq", thr, 0.9, false)},
		{"durable queue: file queue with PublishAsync vs in-memory queue throughput", "≥ 0.90×", ratioTarget("queue-q1-64B", "tern-fileq-async", "tern-memq", thr, 0.9, false)},
		{"3.1.1 publish QoS 0 64 B: tern-v3 throughput vs paho3", "≥ 1×", ratioTarget("pub-q0-64B", rowTernV3, rowPaho3, thr, 1, false)},
		{"3.1.1 publish QoS 0 64 B: tern-v3 CPU/msg vs paho3", "≤ 0.30×", ratioTarget("pub-q0-64B", rowTernV3, rowPaho3, cpu, 0.3, true)},
		{"3.1.1 publish QoS 1 64 B: tern-v3 throughput vs paho3", "≥ 1×", ratioTarget("pub-q1-64B", rowTernV3, rowPaho3, thr, 1, false)},
		{"3.1.1 publish QoS 1 64 B: tern-v3 CPU/msg vs paho3", "≤ 0.30×", ratioTarget("pub-q1-64B", rowTernV3, rowPaho3, cpu, 0.3, true)},
		{"3.1.1 publish QoS 1 pipelined: tern-v3 throughput vs paho3", "≥ 1×", ratioTarget("pipe-q1-64B", rowTernV3, rowPaho3, thr, 1, false)},
		{"3.1.1 publish QoS 1 pipelined: tern-v3 CPU/msg vs paho3", "≤ 0.30×", ratioTarget("pipe-q1-64B", rowTernV3, rowPaho3, cpu, 0.3, true)},
		{"3.1.1 receive QoS 0 (callback): tern-v3 throughput vs paho3", "≥ 1×", ratioTarget("recv-q0-callback-64B", rowTernV3, rowPaho3, thr, 1, false)},
		{"3.1.1 receive QoS 0 (callback): tern-v3 CPU/msg vs paho3", "≤ 0.30×", ratioTarget("recv-q0-callback-64B", rowTernV3, rowPaho3, cpu, 0.3, true)},
		{"3.1.1 receive QoS 1 (callback): tern-v3 throughput vs paho3", "≥ 1×", ratioTarget("recv-q1-callback-64B", rowTernV3, rowPaho3, thr, 1, false)},
		{"3.1.1 receive QoS 1 (callback): tern-v3 CPU/msg vs paho3", "≤ 0.30×", ratioTarget("recv-q1-callback-64B", rowTernV3, rowPaho3, cpu, 0.3, true)},
		{"reconnect: redelivery time vs autopaho", "≤ 1×", ratioTarget("reconnect-q1-64B", rowTern, rowAutopaho,
			func(r *Row) float64 { return r.ReconnectMs }, 1, true)},
	}
	t = append(t, publishTargets()...)
	return append(t, receiveTargets()...)
}

// publishTargets: QoS 1 publishing with 64 goroutines and pipelined against the best peer
// and autopaho's CPU, one at a time against autopaho's CPU. Each "floor" line is not a
// target: it is the raw client's own ratio in the same shape (raw pipelines, raw-sync
// waits for each acknowledgement), the least any client can cost there.
func publishTargets() []target {
	var t []target
	for _, sc := range []string{"conc64-q1-64B", "pipe-q1-64B"} {
		t = append(t,
			target{sc + ": throughput vs the fastest peer", "≥ 1.2×", bestPeerTarget(sc, rowTern, 1.2)},
			target{sc + ": CPU/msg vs autopaho", "≤ 0.4×", ratioTarget(sc, rowTern, rowAutopaho, cpu, 0.4, true)},
			target{sc + ": floor, raw CPU/msg vs autopaho", noTarget, ratioTarget(sc, rowRaw, rowAutopaho, cpu, 0.4, true)})
	}
	for _, sc := range []string{"pub-q1-64B", "pub-q2-64B"} {
		t = append(t,
			target{sc + ": CPU/msg vs autopaho", "≤ 0.5×", ratioTarget(sc, rowTern, rowAutopaho, cpu, 0.5, true)},
			target{sc + ": floor, raw-sync CPU/msg vs autopaho", noTarget, ratioTarget(sc, rowRawSync, rowAutopaho, cpu, 0.5, true)},
			target{sc + ": CPU/msg vs raw-sync", noTarget, ratioTarget(sc, rowTern, rowRawSync, cpu, 1, true)})
	}
	return t
}

// receiveTargets: every tern row of the receive scenarios (callback and channel, zero-copy
// and copying, goroutine and inline callbacks) against the raw subscriber's CPU and the
// fastest peer's throughput; the backlog drain against autopaho.
func receiveTargets() []target {
	var t []target
	for _, sc := range []struct {
		name string
		rows []string
	}{
		{"recv-q0-callback-64B", []string{rowTern, "tern-copy", rowTernInline, rowTernInlineCopy}},
		{"recv-q0-channel-64B", []string{rowTern, "tern-copy"}},
		{"recv-q1-callback-64B", []string{rowTern, "tern-copy", rowTernInline, rowTernInlineCopy}},
		{"recv-q1-channel-64B", []string{rowTern, "tern-copy"}},
	} {
		for _, row := range sc.rows {
			t = append(t,
				target{sc.name + " " + row + ": CPU/msg vs raw", "≤ 1.1×", ratioTarget(sc.name, row, rowRaw, cpu, 1.1, true)},
				target{sc.name + " " + row + ": throughput vs the fastest peer", "≥ 1×", bestPeerTarget(sc.name, row, 1)})
		}
	}
	for _, sc := range []string{"drain-q0-64B", "drain-q1-64B"} {
		for _, row := range []string{rowTern, rowTernInline, rowTernInlineCopy} {
			t = append(t,
				target{sc + " " + row + ": throughput vs autopaho", "≥ 2×", ratioTarget(sc, row, rowAutopaho, thr, 2, false)},
				target{sc + " " + row + ": CPU/msg vs autopaho", "≤ 0.25×", ratioTarget(sc, row, rowAutopaho, cpu, 0.25, true)})
		}
	}
	return t
}

// bestPeerTarget checks a row's throughput against limit times the faster of autopaho and
// paho3.
func bestPeerTarget(sc, row string, limit float64) func([]Row) (string, bool, bool) {
	return func(rows []Row) (string, bool, bool) {
		a, ok := metric(rows, sc, row, thr)
		b1, ok1 := metric(rows, sc, rowAutopaho, thr)
		b2, ok2 := metric(rows, sc, rowPaho3, thr)
		if !ok || (!ok1 && !ok2) || max(b1, b2) == 0 {
			return "not measured", false, false
		}
		v := a / max(b1, b2)
		return fmt.Sprintf("%.2f×", v), v >= limit, true
	}
}

// WriteTargets checks the rows against PRODUCT.md section 5.
func WriteTargets(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "Targets (PRODUCT.md section 5):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | wanted | measured | met |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, t := range targets() {
		got, met, known := t.measure(rows)
		verdict := "no"
		switch {
		case !known || t.want == noTarget:
			verdict = "–"
		case met:
			verdict = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", t.what, t.want, got, verdict)
	}
}
