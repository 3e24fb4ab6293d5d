package main

import (
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/faultproxy"
)

// Ctrl-C with a broker that has stopped answering: the publishers' outstanding
// acknowledgements are waited for at most --wait, then the run ends with its report, the
// unacknowledged publishes counted. Promise: "Ctrl-C ends the run, drains for at most
// --wait and prints the report" (README, tern bench).
func TestBenchInterruptWithStalledBroker(t *testing.T) {
	u := startBenchMosquitto(t)
	p := faultproxy.New(t, strings.TrimPrefix(u, "mqtt://"))
	benchHook = func(r *run) {
		r.beforePublish = func(_ int, seq uint64) {
			if seq == 100 {
				p.Stall()                                 // nothing is acknowledged from here on
				syscall.Kill(os.Getpid(), syscall.SIGINT) // caught by the run's handler
			}
		}
	}
	defer func() { benchHook = nil }()
	type result struct {
		code     int
		out, err string
		rep      *benchReport
	}
	done := make(chan result, 1)
	go func() {
		code, out, errOut, rep := runBenchJSON(t, "pub", "-L", p.URL(), "-q", "1", "--inflight", "32",
			"-n", "1000000", "--wait", "200ms")
		done <- result{code, out, errOut, rep}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		p.Resume() // let the hung run end, so the test does not leak it
		res = <-done
		t.Fatalf("the interrupted run did not end while the broker stalled\n%s\n%s", res.out, res.err)
	}
	p.Resume()
	if res.code != 0 || res.rep == nil || !res.rep.Interrupted {
		t.Fatalf("exit %d\n%s\n%s", res.code, res.out, res.err)
	}
	rep := res.rep
	if rep.Unacked == 0 || rep.Unacked > 32 || rep.Acked+rep.Unacked != rep.Sent || !strings.Contains(res.out, "not acknowledged") {
		t.Fatalf("sent %d acked %d unacked %d\n%s", rep.Sent, rep.Acked, rep.Unacked, res.out)
	}
}

// Rates whose interval does not fit a time.Duration are usage errors, not a panic (connect
// rate) or a closed loop that calls itself open (message rate). Promise: "nothing panics on
// input; every limit has a safe bound".
func TestBenchRateBounds(t *testing.T) {
	t.Setenv("TERN_BROKER", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"conn", "-c", "2", "--connect-rate", "1e12"}, "--connect-rate 1e+12"},
		{[]string{"conn", "-c", "2", "--connect-rate", "1e-12"}, "--connect-rate 1e-12"},
		{[]string{"pub", "--rate", "1e-300", "-d", "1s"}, "--rate 1e-300"},
		{[]string{"pub", "--rate", "0.001", "-n", "1000000000"}, "--rate 0.001"},
		{[]string{"pub", "--interval", "1ns"}, "--interval 1ns"},
		{[]string{"pub", "--insecure"}, "TLS flags need a broker"},
	} {
		var stdout, stderr syncBuffer
		code := dispatch(append([]string{"bench"}, tc.args...), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}

// Message k of an open-loop publisher is due at exactly start + k/rate, whatever the
// rate: an interval rounded to whole nanoseconds would drift (3,000,000 a second would
// send 3,003,003).
func TestBenchDueTimeExact(t *testing.T) {
	begin := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		seq  uint64
		rate float64
		want time.Duration
	}{
		{3_000_000, 3e6, time.Second},
		{7, 7, time.Second},
		{1, 0.001, 1000 * time.Second},
		{0, 123, 0},
	} {
		if got := dueAt(begin, tc.seq, tc.rate).Sub(begin); got != tc.want {
			t.Errorf("message %d at %g/s: due after %v, want %v", tc.seq, tc.rate, got, tc.want)
		}
	}
}

// A sub run started before its publishers measures its receive rate from the first
// message, not from when it subscribed: waiting for the publishers is not receiving.
func TestBenchSubRateFromFirstMessage(t *testing.T) {
	u := startBenchMosquitto(t)
	const idle = time.Second
	var wg sync.WaitGroup
	var code int
	var out, errOut string
	var rep *benchReport
	started := make(chan struct{})
	benchSubscribed = func() { close(started) }
	defer func() { benchSubscribed = nil }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		code, out, errOut, rep = runBenchJSON(t, "sub", "-L", u, "-q", "1", "-n", "500")
	}()
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the sub run did not subscribe")
	}
	time.Sleep(idle) // the gap before the publishers start: what is measured, not synchronisation
	if c, o, e, _ := runBenchJSON(t, "pub", "-L", u, "-q", "1", "-n", "500"); c != 0 {
		t.Fatalf("pub: exit %d\n%s\n%s", c, o, e)
	}
	wg.Wait()
	if code != 0 || rep == nil || rep.Received != 500 {
		t.Fatalf("sub: exit %d\n%s\n%s", code, out, errOut)
	}
	if rep.ReceiveTime >= idle.Seconds()/2 || rep.InRate < 1000 {
		t.Fatalf("received 500 over %.3f s (%.0f/s): the wait for the publishers is counted", rep.ReceiveTime, rep.InRate)
	}
}

// -p alone names a broker on localhost, as in pub and sub: the bench must not start (and
// announce) the embedded broker.
func TestBenchPortAloneIsABroker(t *testing.T) {
	t.Setenv("TERN_BROKER", "")
	u := startBenchMosquitto(t)
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut, rep := runBenchJSON(t, "pub", "-p", pu.Port(), "-n", "5")
	if code != 0 || rep == nil {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(errOut, "embedded") || !strings.HasSuffix(rep.Conditions.Broker, ":"+pu.Port()) {
		t.Fatalf("broker %q, stderr:\n%s", rep.Conditions.Broker, errOut)
	}
}

// tern help bench describes -i and the broker default as bench uses them: -i is a client
// id prefix, and without a broker the embedded one starts.
func TestBenchHelpConnFlags(t *testing.T) {
	var stdout, stderr syncBuffer
	if code := dispatch([]string{"help", "bench"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	help := stdout.String()
	for _, bad := range []string{"required with -c", "assigned by the broker", "or mqtt://localhost:1883)"} {
		if strings.Contains(help, bad) {
			t.Errorf("tern help bench says %q", bad)
		}
	}
	for _, want := range []string{"client id prefix", "embedded broker"} {
		if !strings.Contains(help, want) {
			t.Errorf("tern help bench does not say %q", want)
		}
	}
}

// --inflight N: at most N QoS 1/2 publishes of a publisher are unacknowledged at once. With
// the broker stalled from the start, nothing is acknowledged, so exactly N go out.
func TestBenchInflightWindowExact(t *testing.T) {
	u := startBenchMosquitto(t)
	p := faultproxy.New(t, strings.TrimPrefix(u, "mqtt://"))
	benchHook = func(*run) { p.Stall() }
	defer func() { benchHook = nil }()
	code, out, errOut, rep := runBenchJSON(t, "pub", "-L", p.URL(), "-q", "1", "--inflight", "2",
		"-d", "200ms", "--wait", "200ms")
	p.Resume()
	if code != 0 || rep == nil {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if rep.Sent != 2 || rep.Unacked != 2 || rep.Acked != 0 {
		t.Fatalf("sent %d unacked %d acked %d with --inflight 2\n%s", rep.Sent, rep.Unacked, rep.Acked, out)
	}
}
