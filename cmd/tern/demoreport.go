package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// print writes the report: counts, faults, where duplicates came from, and the verdict.
func (r *demoReport) print(w io.Writer) {
	rate := 0.0
	if r.Elapsed > 0 {
		rate = float64(r.Received) / r.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "tern demo report\n")
	fmt.Fprintf(w, "  broker      %s\n", r.Broker)
	fmt.Fprintf(w, "  publisher   %s\n", r.Publisher)
	fmt.Fprintf(w, "  faults      %d cuts (%d connections closed), %d broker restarts\n", r.Cuts, r.CutConns, r.Restarts)
	if r.RxFirst {
		fmt.Fprintf(w, "              after a restart the publisher waits for the receiver to resume its session\n")
		fmt.Fprintf(w, "              (mochi loses messages routed during a session takeover; --race-mochi shows it)\n")
	}
	fmt.Fprintf(w, "  accepted    %d of %d\n", r.Sent, r.Wanted)
	fmt.Fprintf(w, "  acked       %d\n", r.Acked)
	fmt.Fprintf(w, "  received    %d unique\n", r.Received)
	switch {
	case r.Interrupted:
		// Not lost: still on their way when the user stopped the run.
		fmt.Fprintf(w, "  not yet     %d (accepted, not received before the interruption)\n", r.Lost)
	case len(r.LostSeqs) > 0:
		more := ""
		if r.Lost > len(r.LostSeqs) {
			more = ", ..."
		}
		fmt.Fprintf(w, "  lost        %d (accepted, never received: seq %s%s)\n", r.Lost, joinInts(r.LostSeqs), more)
	default:
		fmt.Fprintf(w, "  lost        %d\n", r.Lost)
	}
	r.printDuplicates(w)
	if r.Unexpected > 0 {
		fmt.Fprintf(w, "  unexpected  %d (received, but their Publish did not report success)\n", r.Unexpected)
	}
	if r.Waiting > 0 {
		where := "still in the durable queue"
		if r.Dir != "" {
			where = "kept in " + r.Dir + " for the next run"
		}
		fmt.Fprintf(w, "  waiting     %d (%s)\n", r.Waiting, where)
	}
	// A Publish cut short by Ctrl-C may still have stored its message: the queue holds more
	// than the callers were told, and the report says so instead of leaving the sum short.
	if more := r.Acked + int64(r.Waiting) - int64(r.Sent); r.Interrupted && more > 0 {
		fmt.Fprintf(w, "  also stored %d beyond those accepted (acked + waiting): Publish calls cut short by\n", more)
		fmt.Fprintf(w, "              the interruption after their message reached the disk, or left in --dir by\n")
		fmt.Fprintf(w, "              an earlier run\n")
	}
	if r.Foreign > 0 {
		fmt.Fprintf(w, "  foreign     %d (from an earlier run, ignored)\n", r.Foreign)
	}
	fmt.Fprintf(w, "  elapsed     %v\n", r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "  rate        %.0f msg/s\n", rate)
	fmt.Fprintf(w, "  connections publisher %d (session lost %d times), receiver %d (session lost %d times)\n",
		r.PubUps, r.TxSessionLost, r.RxUps, r.RxSessionLost)
	if r.RestartError != nil {
		fmt.Fprintf(w, "  restart     failed: %v\n", r.RestartError)
	}
	if r.StuckCloses > 0 {
		fmt.Fprintf(w, "  broker      %d closes stuck in mochi and forced\n", r.StuckCloses)
	}
	if r.CloseError != nil {
		fmt.Fprintf(w, "  broker      close: %v\n", r.CloseError)
	}
	if r.Stalled != "" && !r.Interrupted {
		fmt.Fprintf(w, "  stopped     %s\n", r.Stalled)
	}
	why := r.failures()
	r.printLastError(w, len(why) == 0)
	switch {
	case r.Interrupted:
		fmt.Fprintf(w, "INTERRUPTED: %d of %d messages accepted (stored), %d acknowledged, %d received\n",
			r.Sent, r.Wanted, r.Acked, r.Received)
	case len(why) == 0:
		fmt.Fprintf(w, "PASS: all %d messages arrived\n", r.Sent)
	default:
		fmt.Fprintf(w, "FAIL: %s\n", strings.Join(why, "; "))
	}
}

// printDuplicates prints the duplicate count and where the duplicates came from. The
// receiver cannot see why a message came twice, but the DUP flag and the QoS narrow it down.
// DUP clear: the broker forwarded a new publication, so the publisher sent the message again
// (after a refusal the queue absorbed or a lost session, or at QoS 1 the resend after a cut,
// which the broker forwards as new). DUP set: the broker resent its own delivery after the
// receiver reconnected (in the demo, the broker restart), although the receiver had already
// completed it: the restored broker's record lagged the last acknowledgements, and a
// finished QoS 2 exchange cannot recognise the message again.
func (r *demoReport) printDuplicates(w io.Writer) {
	if r.Duplicates == 0 {
		fmt.Fprintf(w, "  duplicates  0\n")
		return
	}
	fmt.Fprintf(w, "  duplicates  %d: %d at QoS 1, %d at QoS 2\n", r.Duplicates, r.DupQoS1, r.DupQoS2)
	fromPub1, fromPub2 := r.DupQoS1-r.DupResent1, r.DupQoS2-r.DupResent2
	if fromPub1+fromPub2 > 0 {
		fmt.Fprintf(w, "              %d sent again by the publisher (%d at QoS 1, %d at QoS 2), forwarded as new:\n",
			fromPub1+fromPub2, fromPub1, fromPub2)
		fmt.Fprintf(w, "                %d refusals the queue absorbed by resending (e.g. mochi's 0x91 for a\n", r.Retries)
		fmt.Fprintf(w, "                message it had already taken before a cut), %d publisher sessions the\n", r.TxSessionLost)
		fmt.Fprintf(w, "                broker lost (the queue then republishes everything unacknowledged)\n")
		if fromPub1 > 0 {
			fmt.Fprintf(w, "                and at QoS 1 the resend after a cut before the acknowledgement came back,\n")
			fmt.Fprintf(w, "                as QoS 1 (at least once) allows\n")
		}
		if r.TxSessionLost == 0 && int64(fromPub2) > r.Retries {
			fmt.Fprintf(w, "                (%d at QoS 2 more than those refusals explain)\n", int64(fromPub2)-r.Retries)
		}
	}
	if resent := r.DupResent1 + r.DupResent2; resent > 0 {
		fmt.Fprintf(w, "              %d resent by the broker to the receiver with DUP set (%d at QoS 1, %d at QoS 2):\n",
			resent, r.DupResent1, r.DupResent2)
		fmt.Fprintf(w, "                after the receiver reconnected (the broker restart) the broker still held\n")
		fmt.Fprintf(w, "                them as in flight although the receiver had completed them; QoS 2 is exactly\n")
		fmt.Fprintf(w, "                once per exchange, and a finished exchange cannot recognise them again\n")
	}
}

// printLastError prints the publisher's last error: in full when the run failed or -v
// asks, otherwise as a plain-words account of the broker quirk the run absorbed.
func (r *demoReport) printLastError(w io.Writer, passed bool) {
	if r.LastError == nil {
		return
	}
	if !passed || r.Verbose {
		fmt.Fprintf(w, "  last error  %v\n", r.LastError)
		return
	}
	var rc *tern.ReasonCodeError
	if errors.As(r.LastError, &rc) && rc.Code == packet.PacketIdentifierInUse {
		fmt.Fprintf(w, "  absorbed    after a cut the broker refused %d resent messages as \"packet identifier in\n", r.Retries)
		fmt.Fprintf(w, "              use\" (0x91): mochi still held them from the old connection. The queue kept them\n")
		fmt.Fprintf(w, "              and sent them again; nothing was lost (-v shows the raw error)\n")
		return
	}
	fmt.Fprintf(w, "  absorbed    %d refusals, each kept and sent again; nothing was lost (-v shows the last)\n", r.Retries)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " ")
}
