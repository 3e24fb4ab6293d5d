package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/faultproxy"
)

// benchOut runs tern bench with args and returns the exit status, stdout, stderr and the
// --json report (which the run writes to a temp file).
func runBenchJSON(t *testing.T, args ...string) (int, string, string, *benchReport) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.json")
	args = append([]string{"bench"}, append(args, "--json", path)...)
	var stdout, stderr syncBuffer
	code := dispatch(args, &stdout, &stderr)
	var rep *benchReport
	if b, err := os.ReadFile(path); err == nil {
		rep = &benchReport{}
		if err := json.Unmarshal(b, rep); err != nil {
			t.Fatalf("report: %v\n%s", err, b)
		}
	}
	return code, stdout.String(), stderr.String(), rep
}

// startBenchMosquitto starts a Mosquitto configured as BROKERS.md says for benchmarks.
func startBenchMosquitto(t *testing.T) string {
	return startMosquitto(t, "set_tcp_nodelay true", "max_inflight_messages 100")
}

// Every message sent is received exactly once by every subscriber, at each QoS, against
// Mosquitto and against the embedded broker.
func TestBenchPubSubCounts(t *testing.T) {
	mosq := startBenchMosquitto(t)
	for _, tc := range []struct {
		name, url string
		qos       int
		coalesce  string // --read-coalescing, "" for the default
	}{
		{"mosquitto-qos0", mosq, 0, ""}, {"mosquitto-qos1", mosq, 1, ""}, {"mosquitto-qos2", mosq, 2, ""},
		{"embedded-qos1", "", 1, ""}, {"embedded-qos2", "", 2, ""},
		{"mosquitto-qos1-no-coalescing", mosq, 1, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TERN_BROKER", "")
			args := []string{"pubsub", "-c", "3", "--subs", "2", "-n", "300", "-q", fmt.Sprint(tc.qos), "--inflight", "8"}
			if tc.url != "" {
				args = append(args, "-L", tc.url)
			}
			want := tern.DefaultReadCoalescing.String()
			if tc.coalesce != "" {
				args = append(args, "--read-coalescing", tc.coalesce)
				want = "0s"
			}
			code, out, errOut, rep := runBenchJSON(t, args...)
			if code != 0 || rep == nil {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if rep.Sent != 900 || rep.Expected != 1800 || rep.Received != 1800 || rep.Lost != 0 || rep.Duplicates != 0 {
				t.Fatalf("sent %d expected %d received %d lost %d dup %d\n%s", rep.Sent, rep.Expected, rep.Received, rep.Lost, rep.Duplicates, out)
			}
			if rep.Latency == nil || rep.Latency.Count != 1800 {
				t.Fatalf("latency %+v", rep.Latency)
			}
			if tc.qos > 0 && (rep.Acked != 900 || rep.AckLatency == nil || rep.AckLatency.Count != 900) {
				t.Fatalf("acked %d, ack latency %+v", rep.Acked, rep.AckLatency)
			}
			if rep.ConnsUp != 5 || rep.Connect == nil || rep.Connect.Count != 5 {
				t.Fatalf("connections up %d, connect %+v", rep.ConnsUp, rep.Connect)
			}
			if !strings.Contains(out, "lost            0") {
				t.Fatalf("table:\n%s", out)
			}
			if rep.Conditions.ReadCoalescing != want || !strings.Contains(out, "read coalescing "+want) {
				t.Fatalf("read coalescing %q in the report, want %q:\n%s", rep.Conditions.ReadCoalescing, want, out)
			}
		})
	}
}

// With a shared subscription the group together receives each message once; a sub
// workload fed by a pub workload of another "process" (another run id) sees them all.
func TestBenchPubFeedsSharedSub(t *testing.T) {
	url := startBenchMosquitto(t)
	type result struct {
		code int
		out  string
		rep  *benchReport
	}
	subDone := make(chan result, 1)
	ready := &syncBuffer{}
	go func() {
		path := filepath.Join(t.TempDir(), "sub.json")
		var stdout syncBuffer
		code := dispatch([]string{"bench", "sub", "-L", url, "--subs", "3", "--shared", "g", "-q", "1",
			"-n", "400", "--json", path, "--interval", "20ms"}, &stdout, ready)
		var rep benchReport
		b, _ := os.ReadFile(path)
		json.Unmarshal(b, &rep)
		subDone <- result{code, stdout.String(), &rep}
	}()
	// The status line starts once the subscribers are subscribed.
	ready.waitFor(t, "conns 3", 20*time.Second)
	code, out, errOut, rep := runBenchJSON(t, "pub", "-L", url, "-c", "2", "-n", "200", "-q", "1")
	if code != 0 || rep.Sent != 400 || rep.Acked != 400 {
		t.Fatalf("pub: exit %d\n%s\n%s", code, out, errOut)
	}
	res := <-subDone
	if res.code != 0 || res.rep.Received != 400 || res.rep.Lost != 0 || res.rep.Duplicates != 0 || res.rep.Foreign != 0 {
		t.Fatalf("sub: exit %d received %d lost %d dup %d\n%s", res.code, res.rep.Received, res.rep.Lost, res.rep.Duplicates, res.out)
	}
}

// A path that drops the connection with QoS 0 messages in flight is reported as loss, per
// publisher; at QoS 0 that is not a failure of the run.
func TestBenchLossyPathReportsLoss(t *testing.T) {
	url := startBenchMosquitto(t)
	p := faultproxy.New(t, strings.TrimPrefix(url, "mqtt://"))
	// Every connection is cut after this many bytes from the client, mid-packet: the
	// subscriber sends far fewer, the publisher far more, again after each reconnection.
	p.CutAfter(40_001)
	code, out, errOut, rep := runBenchJSON(t, "pubsub", "-L", p.URL(), "-c", "1", "--subs", "1", "-n", "3000",
		"-q", "0", "--wait", "1s")
	if code != 0 || rep == nil {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if rep.Lost == 0 || rep.Received+rep.Lost != rep.Sent || rep.ConnErrors == 0 {
		t.Fatalf("sent %d received %d lost %d connection errors %d\n%s", rep.Sent, rep.Received, rep.Lost, rep.ConnErrors, out)
	}
	if len(rep.Publishers) != 1 || rep.Publishers[0].Lost != rep.Lost || rep.Publishers[0].Expected != rep.Sent {
		t.Fatalf("publishers %+v", rep.Publishers)
	}
	if !strings.Contains(out, fmt.Sprintf("lost            %d", rep.Lost)) {
		t.Fatalf("table does not show the loss:\n%s", out)
	}
}

// A JSON report round-trips through merge: counts add up and the merged percentiles are
// those of the added histograms.
func TestBenchMergeRoundTrip(t *testing.T) {
	url := startBenchMosquitto(t)
	dir := t.TempDir()
	var reps []*benchReport
	var files []string
	for i, n := range []string{"150", "250"} {
		code, out, errOut, rep := runBenchJSON(t, "pubsub", "-L", url, "-c", "2", "-n", n, "-q", "1")
		if code != 0 || rep == nil {
			t.Fatalf("run %d: exit %d\n%s\n%s", i, code, out, errOut)
		}
		b, _ := json.Marshal(rep)
		f := filepath.Join(dir, fmt.Sprintf("r%d.json", i))
		os.WriteFile(f, b, 0o644)
		files, reps = append(files, f), append(reps, rep)
	}
	merged := filepath.Join(dir, "merged.json")
	var stdout, stderr syncBuffer
	if code := dispatch(append([]string{"bench", "merge", "--json", merged, "--plot", filepath.Join(dir, "m.png")}, files...), &stdout, &stderr); code != 0 {
		t.Fatalf("merge: exit %d\n%s", code, stderr.String())
	}
	m, err := readReport(merged)
	if err != nil {
		t.Fatal(err)
	}
	if m.Sent != 800 || m.Received != 800 || m.Lost != 0 || len(m.Sources) != 2 || m.Conditions.Clients != 4 {
		t.Fatalf("merged: sent %d received %d lost %d sources %d clients %d", m.Sent, m.Received, m.Lost, len(m.Sources), m.Conditions.Clients)
	}
	want := hdrhistogram.New(1, histMaxMicros, 3)
	for _, r := range reps {
		h, err := r.hist("latency")
		if err != nil || h == nil {
			t.Fatalf("histogram: %v", err)
		}
		want.Merge(h)
	}
	got, err := m.hist("latency")
	if err != nil || got == nil {
		t.Fatal(err)
	}
	if got.TotalCount() != 800 || m.Latency.Count != 800 || !got.Equals(want) {
		t.Fatalf("merged histogram: %d values, want 800 equal to the sum", got.TotalCount())
	}
	if wantP99 := float64(want.ValueAtQuantile(99)) / 1000; m.Latency.P99 != wantP99 {
		t.Fatalf("merged p99 %v, want %v", m.Latency.P99, wantP99)
	}
	if fi, err := os.Stat(filepath.Join(dir, "m.png")); err != nil || fi.Size() == 0 {
		t.Fatalf("plot: %v", err)
	}
	// Reports of different workloads do not merge.
	var conn syncBuffer
	code, _, _, cr := runBenchJSON(t, "conn", "-L", url, "-c", "3")
	if code != 0 || cr.ConnsUp != 3 {
		t.Fatalf("conn: exit %d", code)
	}
	b, _ := json.Marshal(cr)
	cf := filepath.Join(dir, "conn.json")
	os.WriteFile(cf, b, 0o644)
	if code := dispatch([]string{"bench", "merge", files[0], cf}, &conn, &conn); code != 1 || !strings.Contains(conn.String(), "cannot merge") {
		t.Fatalf("mixed merge: exit %d: %s", code, conn.String())
	}
}

// Open loop proven: with the broker stalled on purpose mid-run, latency measured from the
// scheduled time shows the stall in the p99; the same run in closed loop hides it (only
// the one message in flight waits), though its max still shows it.
func TestBenchOpenLoopShowsStall(t *testing.T) {
	url := startBenchMosquitto(t)
	const stall = 600 * time.Millisecond
	run := func(args ...string) *benchReport {
		p := faultproxy.New(t, strings.TrimPrefix(url, "mqtt://"))
		var wg sync.WaitGroup
		benchHook = func(r *run) {
			// The stall starts as message 100 is about to go: mid-run, whatever the
			// scheduling.
			r.beforePublish = func(_ int, seq uint64) {
				if seq != 100 {
					return
				}
				p.Stall()
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(stall) // the fault's length, not synchronisation
					p.Resume()
				}()
			}
		}
		defer func() { benchHook = nil }()
		code, out, errOut, rep := runBenchJSON(t, append([]string{"pubsub", "-L", p.URL(), "-q", "1", "--inflight", "1"}, args...)...)
		wg.Wait()
		if code != 0 || rep == nil || rep.Lost != 0 || rep.Latency == nil {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		return rep
	}
	open := run("--rate", "250", "-n", "500")
	closed := run("--rate", "0", "-n", "2000")
	half := float64(stall/time.Millisecond) / 2
	t.Logf("open loop p99 %.1f ms max %.1f ms; closed loop p99 %.1f ms max %.1f ms",
		open.Latency.P99, open.Latency.Max, closed.Latency.P99, closed.Latency.Max)
	if open.Latency.P99 < half {
		t.Errorf("open loop p99 %.1f ms does not show a %v stall", open.Latency.P99, stall)
	}
	if closed.Latency.Max < half {
		t.Errorf("closed loop max %.1f ms does not show the stall at all", closed.Latency.Max)
	}
	if closed.Latency.P99 >= open.Latency.P99/2 {
		t.Errorf("closed loop p99 %.1f ms did not hide the stall (open %.1f ms)", closed.Latency.P99, open.Latency.P99)
	}
}

// The conn workload reports connections, connect times and the memory each costs.
func TestBenchConn(t *testing.T) {
	url := startBenchMosquitto(t)
	code, out, errOut, rep := runBenchJSON(t, "conn", "-L", url, "-c", "40", "--connect-rate", "400")
	if code != 0 || rep == nil {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if rep.ConnsUp != 40 || rep.ConnsFailed != 0 || rep.Connect == nil || rep.Connect.Count != 40 ||
		rep.HeapPerConn <= 0 || rep.GoroutinesPerCon < 1 {
		t.Fatalf("up %d failed %d connect %+v heap %v goroutines %v", rep.ConnsUp, rep.ConnsFailed, rep.Connect, rep.HeapPerConn, rep.GoroutinesPerCon)
	}
	// 40 connections at 400 a second take at least 39 intervals of 2.5 ms.
	if rep.Connect.Count == 40 && !strings.Contains(out, "per connection") {
		t.Fatalf("table:\n%s", out)
	}
}

func TestBenchBadInput(t *testing.T) {
	t.Setenv("TERN_BROKER", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "name a workload"},
		{[]string{"flood"}, "unknown workload"},
		{[]string{"pub", "-c", "0"}, "-c 0"},
		{[]string{"pub", "-c", "-3"}, "-c -3"},
		{[]string{"pubsub", "--subs", "0"}, "--subs 0"},
		{[]string{"pub", "-n", "0"}, "-n 0"},
		{[]string{"pub", "-n", "-1"}, "-n -1"},
		{[]string{"pub", "--rate", "100"}, "--rate needs --duration"},
		{[]string{"pub", "--rate", "-1", "-d", "1s"}, "--rate -1"},
		{[]string{"pub", "-d", "-1s"}, "--duration"},
		{[]string{"pub", "-n", "5", "-d", "1s"}, "not both"},
		{[]string{"pub", "-q", "3"}, "-q 3"},
		{[]string{"pub", "--size", "8"}, "--size 8"},
		{[]string{"pub", "--inflight", "0"}, "--inflight 0"},
		{[]string{"pub", "--read-coalescing", "-1ms"}, "--read-coalescing -1ms"},
		{[]string{"pub", "--read-coalescing", "2s"}, "--read-coalescing 2s"},
		{[]string{"pub", "-t", "a/#"}, "-t"},
		{[]string{"pub", "--plot", "x.gif"}, "unknown image format"},
		{[]string{"pub", "--bogus"}, "bogus"},
		{[]string{"merge"}, "name the reports"},
	} {
		var stdout, stderr syncBuffer
		code := dispatch(append([]string{"bench"}, tc.args...), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}

	// An unreachable broker: a clear error and exit status 1.
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var stdout, stderr syncBuffer
	code := dispatch([]string{"bench", "pubsub", "-L", addr, "--connect-timeout", "2s"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "tern bench: client") || !strings.Contains(stderr.String(), "refused") {
		t.Errorf("unreachable: exit %d, stderr %q", code, stderr.String())
	}

	// More connections than file descriptors: refused before anything starts.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= 1_000_000 {
		t.Logf("fd limit check not exercised (limit %d)", lim.Cur)
		return
	}
	stdout, stderr = syncBuffer{}, syncBuffer{}
	code = dispatch([]string{"bench", "conn", "-L", addr, "-c", fmt.Sprint(lim.Cur)}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "ulimit -n") {
		t.Errorf("fd limit: exit %d, stderr %q", code, stderr.String())
	}
}

func TestTrackerCounts(t *testing.T) {
	tr := newTracker(true)
	run := uint64(7)
	for _, seq := range []uint64{0, 1, 3, 2, 3, 5, 200} {
		tr.add(stamp{run: run, client: 1, seq: seq})
	}
	tr.add(stamp{run: run, client: 2, seq: 0})
	tr.add(stamp{run: run, client: 1, seq: 201 + maxSeqJump}) // too far ahead: foreign
	v := tr.verdicts(map[pubKey]uint64{{run, 1}: 300, {run, 2}: 1, {run, 3}: 4})
	want := []pubLoss{
		{Run: run, Client: 1, Expected: 300, Received: 6, Lost: 294, Duplicates: 1, Reordered: 1},
		{Run: run, Client: 2, Expected: 1, Received: 1},
		{Run: run, Client: 3, Expected: 4, Lost: 4},
	}
	if fmt.Sprint(v) != fmt.Sprint(want) || tr.foreign != 1 {
		t.Fatalf("verdicts %+v foreign %d, want %+v", v, tr.foreign, want)
	}
	// Without the sent counts, only gaps below the highest sequence are loss.
	if v := tr.verdicts(nil); v[0].Expected != 201 || v[0].Lost != 195 {
		t.Fatalf("gaps: %+v", v[0])
	}
	// A receiver that joins mid-way counts from the first message it gets; members of a
	// shared group may see an earlier one after it.
	late := newTracker(false)
	for _, seq := range []uint64{5_000_001, 5_000_003, 4_999_999} {
		late.add(stamp{run: 1, client: 0, seq: seq})
	}
	if v := late.verdicts(nil); v[0].Expected != 5 || v[0].Lost != 2 || v[0].Reordered != 1 || late.foreign != 0 {
		t.Fatalf("late join: %+v, %d foreign", v[0], late.foreign)
	}
	var b [stampSize]byte
	s := stamp{run: 1<<63 + 5, client: 9, seq: 1 << 40, due: -3}
	s.put(b[:])
	if got, ok := parseStamp(b[:]); !ok || got != s {
		t.Fatalf("stamp round trip: %+v %v", got, ok)
	}
	if _, ok := parseStamp(b[:31]); ok {
		t.Fatal("short payload parsed")
	}
}

// A stamp from a hostile or broken publisher cannot make a receiver grow without bound: a
// sequence far from those seen, too many publishers, or a publisher creeping up by just
// under the jump limit count as foreign instead of growing the bitmaps or the table.
func TestTrackerBoundsMemory(t *testing.T) {
	tr := newTracker(true)
	tr.add(stamp{run: 1, client: 0, seq: 0})
	tr.add(stamp{run: 1, client: 0, seq: maxSeqJump + 1}) // would need a large bitmap
	tr.add(stamp{run: 1, client: 1, seq: maxSeqJump + 5}) // a first message far out
	if tr.foreign != 2 || len(tr.pubs[pubKey{1, 0}].seen) > 1 || tr.pubs[pubKey{1, 1}] != nil {
		t.Fatalf("foreign %d, bitmap %d words", tr.foreign, len(tr.pubs[pubKey{1, 0}].seen))
	}
	for i := range maxPublishers + 10 {
		tr.add(stamp{run: 2, client: uint32(i)})
	}
	// One place is taken by run 1's publisher: 11 of run 2's do not fit.
	if len(tr.pubs) != maxPublishers || tr.foreign != 2+11 {
		t.Fatalf("%d publishers tracked, %d foreign", len(tr.pubs), tr.foreign)
	}
	// Creeping up by just under the jump limit: the bitmap slides, memory stays bounded,
	// every message is counted and the gaps are loss.
	one := newTracker(true)
	const steps = 600 // 600 jumps of 2^20 pass the 2^29 bits of maxWords
	for i := range uint64(steps) {
		one.add(stamp{run: 3, seq: i * (maxSeqJump - 1)})
	}
	if one.words > maxWords || one.foreign != 0 {
		t.Fatalf("%d bitmap words (bound %d), %d foreign", one.words, maxWords, one.foreign)
	}
	if v := one.verdicts(nil)[0]; v.Received != steps || v.Lost != v.Expected-steps {
		t.Fatalf("verdict %+v, want %d received and the rest lost", v, steps)
	}
}

// A publisher that sends more than the bitmaps' bound (2^29 messages of one publisher) is
// still counted exactly: the bitmap slides along, keeping the last maxSeqJump sequence
// numbers. Here with the bound lowered, so that 5 million messages pass it many times:
// every message received, gaps counted as loss, a late duplicate within the window found,
// and one later than the window counted as foreign, never as a second receipt.
func TestTrackerSlidesPastItsBound(t *testing.T) {
	tr := newTracker(true)
	tr.limit = 2 * maxSeqJump / 64 // two windows
	const n = 5_000_000
	for seq := uint64(0); seq < n; seq++ {
		if seq%1000 == 7 {
			continue // lost
		}
		tr.add(stamp{run: 1, seq: seq})
	}
	if tr.words > tr.limit {
		t.Fatalf("%d bitmap words, bound %d", tr.words, tr.limit)
	}
	if tr.add(stamp{run: 1, seq: n - 10}) { // a duplicate inside the window
		t.Fatal("duplicate within the window counted as new")
	}
	if tr.add(stamp{run: 1, seq: 8}) { // far behind the window: unknown, foreign
		t.Fatal("a message older than the window counted as new")
	}
	v := tr.verdicts(map[pubKey]uint64{{1, 0}: n})[0]
	want := uint64(n - n/1000)
	if v.Received != want || v.Lost != n/1000 || v.Duplicates != 1 || tr.foreign != 1 {
		t.Fatalf("verdict %+v, foreign %d; want %d received, %d lost, 1 duplicate, 1 foreign",
			v, tr.foreign, want, n/1000)
	}
}

// Ctrl-C ends the run and the report is still printed, marked interrupted, with what was
// measured: the messages sent before the signal arrived and were received.
func TestBenchInterruptPrintsReport(t *testing.T) {
	url := startBenchMosquitto(t)
	benchHook = func(r *run) {
		r.beforePublish = func(_ int, seq uint64) {
			if seq == 50 {
				syscall.Kill(os.Getpid(), syscall.SIGINT) // caught by the run's handler
			}
		}
	}
	defer func() { benchHook = nil }()
	code, out, errOut, rep := runBenchJSON(t, "pubsub", "-L", url, "-q", "1", "--rate", "200", "-d", "1m")
	if code != 0 || rep == nil || !rep.Interrupted {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if rep.Sent < 50 || rep.Received != rep.Sent || rep.Lost != 0 || !strings.Contains(out, "(interrupted)") {
		t.Fatalf("sent %d received %d lost %d\n%s", rep.Sent, rep.Received, rep.Lost, out)
	}
}
