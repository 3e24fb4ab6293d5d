package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// A passing run explains the broker quirk it absorbed in plain words and keeps the raw
// error for -v; a failing run shows the raw error.
func TestDemoReportExplainsAbsorbedRefusals(t *testing.T) {
	quirk := &tern.ReasonCodeError{Op: "publish", Code: packet.PacketIdentifierInUse}
	rep := &demoReport{Wanted: 10, Sent: 10, Retries: 3, LastError: quirk, seqCount: seqCount{Received: 10}}
	var out bytes.Buffer
	rep.print(&out)
	if s := out.String(); strings.Contains(s, "last error") || !strings.Contains(s, "refused 3 resent messages") ||
		!strings.Contains(s, `"packet identifier in`) || !strings.Contains(s, "nothing was lost") || !strings.Contains(s, "PASS") {
		t.Fatalf("PASS report:\n%s", s)
	}
	rep.Verbose = true
	out.Reset()
	rep.print(&out)
	if !strings.Contains(out.String(), "last error  "+quirk.Error()) {
		t.Fatalf("-v report:\n%s", out.String())
	}
	rep.Verbose, rep.Lost, rep.LostSeqs = false, 1, []int{4}
	out.Reset()
	rep.print(&out)
	if !strings.Contains(out.String(), "last error  "+quirk.Error()) || !strings.Contains(out.String(), "FAIL") {
		t.Fatalf("FAIL report:\n%s", out.String())
	}
}

// Duplicates are split by the QoS they arrived at, and the report says where each kind
// comes from: with DUP clear they were sent again as new messages (absorbed refusals, lost
// publisher sessions), and at QoS 1 may be the resend after a cut.
func TestDemoReportSplitsDuplicates(t *testing.T) {
	tl := newTally(9, 6)
	for seq := 1; seq <= 6; seq++ {
		tl.accept(seq)
	}
	for _, d := range []struct {
		seq uint64
		qos byte
	}{{1, 1}, {1, 1}, {2, 2}, {2, 2}, {2, 2}, {3, 1}, {4, 2}, {5, 1}, {6, 2}} {
		payload := make([]byte, 16)
		binary.BigEndian.PutUint64(payload, d.seq)
		binary.BigEndian.PutUint64(payload[8:], 9)
		tl.add(&tern.Message{Payload: payload, QoS: d.qos})
	}
	rep := &demoReport{Wanted: 6, Sent: 6, Retries: 2, TxSessionLost: 1, seqCount: tl.compare()}
	if rep.Duplicates != 3 || rep.DupQoS1 != 1 || rep.DupQoS2 != 2 {
		t.Fatalf("duplicates %d (QoS 1 %d, QoS 2 %d); want 3 (1, 2)", rep.Duplicates, rep.DupQoS1, rep.DupQoS2)
	}
	var out bytes.Buffer
	rep.print(&out)
	s := out.String()
	if !strings.Contains(s, "duplicates  3: 1 at QoS 1, 2 at QoS 2") || !strings.Contains(s, "2 refusals the queue absorbed") ||
		!strings.Contains(s, "1 publisher sessions the") || !strings.Contains(s, "at QoS 1 the resend after a cut") ||
		!strings.Contains(s, "publisher 0 (session lost 1 times)") {
		t.Fatalf("report:\n%s", s)
	}
}

// Duplicates the broker resent itself (DUP set, after the receiver reconnected) are told
// apart from those the publisher sent again: a run with no refusal and no lost session must
// not put them down to either (it did, with 288 QoS 2 duplicates after a broker restart).
func TestDemoReportNamesBrokerResends(t *testing.T) {
	tl := newTally(9, 4)
	for seq := 1; seq <= 4; seq++ {
		tl.accept(seq)
	}
	for _, d := range []struct {
		seq uint64
		qos byte
		dup bool
	}{{1, 2, false}, {1, 2, true}, {2, 2, false}, {2, 2, true}, {3, 1, false}, {3, 1, false}, {4, 2, false}} {
		payload := make([]byte, 16)
		binary.BigEndian.PutUint64(payload, d.seq)
		binary.BigEndian.PutUint64(payload[8:], 9)
		tl.add(&tern.Message{Payload: payload, QoS: d.qos, Dup: d.dup})
	}
	rep := &demoReport{Wanted: 4, Sent: 4, seqCount: tl.compare()}
	if rep.DupQoS2 != 2 || rep.DupResent2 != 2 || rep.DupQoS1 != 1 || rep.DupResent1 != 0 {
		t.Fatalf("QoS 2 dups %d (DUP set %d), QoS 1 dups %d (DUP set %d); want 2 (2), 1 (0)",
			rep.DupQoS2, rep.DupResent2, rep.DupQoS1, rep.DupResent1)
	}
	var out bytes.Buffer
	rep.print(&out)
	s := out.String()
	if !strings.Contains(s, "2 resent by the broker to the receiver with DUP set (0 at QoS 1, 2 at QoS 2)") ||
		!strings.Contains(s, "1 sent again by the publisher (1 at QoS 1, 0 at QoS 2)") ||
		!strings.Contains(s, "resend after a cut") {
		t.Fatalf("report:\n%s", s)
	}
	// Publisher-side QoS 2 duplicates that the refusals do not cover are said to be unexplained.
	rep = &demoReport{Wanted: 4, Sent: 4, Retries: 1, seqCount: seqCount{Received: 4, Duplicates: 3, DupQoS2: 3}}
	out.Reset()
	rep.print(&out)
	if s := out.String(); !strings.Contains(s, "(2 at QoS 2 more than those refusals explain)") {
		t.Fatalf("report:\n%s", s)
	}
}

// An interrupted run whose queue holds more than the Publish calls that returned (a call cut
// short after its message was stored) says so, so acked + waiting is not left unexplained
// (a Ctrl-C run reported 72258 accepted, 72257 acked and 32 waiting).
func TestDemoReportInterruptedCountsLateStores(t *testing.T) {
	rep := &demoReport{Wanted: 100, Sent: 50, Acked: 49, Waiting: 32, Interrupted: true, seqCount: seqCount{Received: 49, Lost: 1}}
	var out bytes.Buffer
	rep.print(&out)
	if s := out.String(); !strings.Contains(s, "also stored 31 beyond those accepted") || !strings.Contains(s, "INTERRUPTED: 50 of 100") {
		t.Fatalf("report:\n%s", s)
	}
	rep.Waiting = 1
	out.Reset()
	rep.print(&out)
	if s := out.String(); strings.Contains(s, "also stored") {
		t.Fatalf("report with nothing extra stored:\n%s", s)
	}
}

// --broker takes host:port, as every other command does.
func TestDemoBrokerHostPort(t *testing.T) {
	url := startEmbedded(t)
	st, out := runDemoWithHook(t, nil, time.Minute, "--broker", strings.TrimPrefix(url, "mqtt://"),
		"--messages", "300", "--cuts", "1", "--restart=false", "--wait", "20s")
	if st != 0 || !strings.Contains(out, "PASS: all 300 messages arrived") {
		t.Fatalf("status %d; want 0 and PASS:\n%s", st, out)
	}
	for _, bad := range []string{"nohostport", "mqtts://127.0.0.1:1", "http://x"} {
		st, out = runDemoWithHook(t, nil, time.Minute, "--broker", bad)
		if st != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "--broker") {
			t.Errorf("--broker %s: status %d, output %q; want 2 and one line", bad, st, out)
		}
	}
}

// Ctrl-C during the demo: the report says INTERRUPTED (not FAIL, nothing counted lost),
// counts what was stored, acknowledged and received, the exit status is 130, and the
// queue directory the user gave is kept.
func TestDemoInterrupted(t *testing.T) {
	dir := t.TempDir() + "/queue"
	c := startChild(t, nil, "demo", "--messages", "5000000", "--cuts", "0", "--restart=false", "--dir", dir)
	c.stderr.waitFor(t, "tern demo: acked", 30*time.Second)
	c.cmd.Process.Signal(os.Interrupt)
	if st := c.status(t, 30*time.Second); st != exitInterrupted {
		t.Fatalf("status %d; want 130\n%s%s", st, c.stdout.String(), c.stderr.String())
	}
	out := c.stdout.String()
	t.Log("\n" + out)
	if !strings.Contains(out, "INTERRUPTED: ") || !strings.Contains(out, "of 5000000 messages accepted (stored)") ||
		strings.Contains(out, "FAIL") || strings.Contains(out, "lost        ") {
		t.Fatalf("report does not say interrupted")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("--dir removed: %v", err)
	}
}
