package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// exitTimeout is the exit status when -W expires, as mosquitto_sub uses.
const exitTimeout = 27

// subFlags are the options of tern sub.
type subFlags struct {
	conn           connFlags
	topics         stringList
	qos            int
	noLocal        bool
	retainAsPub    bool
	retainHandling int
	share          string
	count          int
	timeout        int
	skipRetained   bool
	verbose        bool
	format         string
	json           bool
	debug          bool
	maxPacketSize  int64
}

func newSubFlags(stderr io.Writer) (*cliFlags, *subFlags) {
	f := &subFlags{}
	c := newCLIFlags("sub", "-t FILTER [-t FILTER ...] [flags]", `Subscribes and prints each message on stdout, like mosquitto_sub: the payload, the topic
and payload with -v, a format of your own with -F, or one JSON object per line with --json.
A QoS 1/2 message is acknowledged only after its line is written.

Exit status: 0 done (-C reached, or Ctrl-C), 1 a refusal or a runtime failure, 2 a usage
error, 27 the -W timeout expired.`, stderr)
	c.Var(&f.topics, "t,topic", "FILTER", "topic filter to subscribe to; repeat for more (required)")
	c.Int(&f.qos, "q,qos", "QOS", 0, "maximum QoS to receive at: 0, 1 or 2")
	c.Bool(&f.noLocal, "no-local", "do not receive messages this client publishes")
	c.Bool(&f.retainAsPub, "retain-as-published", "keep the RETAIN flag as the publisher set it")
	c.Int(&f.retainHandling, "retain-handling", "0|1|2", 0, "retained messages at subscribe: 0 send, 1 send if the subscription is new, 2 do not send")
	c.String(&f.share, "share", "GROUP", "", "subscribe as a member of shared subscription GROUP ($share/GROUP/FILTER)")
	c.Int(&f.count, "C,count", "N", 0, "exit after N messages (0: no limit)")
	c.Int(&f.timeout, "W,timeout", "SECONDS", 0, "exit with status 27 after SECONDS (0: no limit)")
	c.Bool(&f.skipRetained, "R,no-retained", "do not print retained (stale) messages")
	c.Bool(&f.verbose, "v,verbose", "print the topic, a space, then the payload")
	c.String(&f.format, "F,format", "FORMAT", "", "print with FORMAT: %t topic, %p payload, %q QoS, ... (see the README)")
	c.Bool(&f.json, "json", "print one JSON object per message (NDJSON) with every property")
	c.Bool(&f.debug, "d,debug", "report the connection and the subscription on stderr")
	c.fs.Int64Var(&f.maxPacketSize, "max-packet-size", tern.DefaultMaximumPacketSize, "")
	c.add("max-packet-size", "BYTES", strconv.Itoa(tern.DefaultMaximumPacketSize),
		"largest packet accepted, announced to the broker, which drops larger messages for this client (0: the protocol's 256 MiB)")
	addConnFlags(c, &f.conn)
	return c, f
}

func runSubCmd(args []string, stdout, stderr io.Writer) int {
	c, f := newSubFlags(stderr)
	if st := c.parse(args); st >= 0 {
		return st
	}
	filters, err := f.filters()
	if err == nil {
		err = f.conn.v5Only(c, "no-local", "retain-as-published", "retain-handling", "max-packet-size")
	}
	if err != nil {
		return exitStatus(stderr, "sub", err)
	}
	pr, err := f.printer(stderr)
	if err != nil {
		return exitStatus(stderr, "sub", err)
	}
	if f.maxPacketSize < 0 || f.maxPacketSize > math.MaxUint32 || (f.maxPacketSize > 0 && f.maxPacketSize < 16) {
		return exitStatus(stderr, "sub", usagef("--max-packet-size %d: want 0 (no limit of its own) or bytes in [16, 4294967295]", f.maxPacketSize))
	}
	broker, opts, err := f.conn.options(tern.WithMaximumPacketSize(uint32(f.maxPacketSize)))
	if err != nil {
		return exitStatus(stderr, "sub", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.timeout > 0 {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		t := time.AfterFunc(time.Duration(f.timeout)*time.Second, func() { cancel(errTimeout) })
		defer t.Stop()
		defer cancel(nil)
	}
	err = subscribeAndPrint(ctx, broker, opts, filters, f, pr, stdout, stderr)
	if errors.Is(context.Cause(ctx), errTimeout) {
		fmt.Fprintf(stderr, "tern sub: timed out after %d s (-W)\n", f.timeout)
		return exitTimeout
	}
	if ctx.Err() != nil && err == nil {
		return 0 // Ctrl-C: a clean stop
	}
	return exitStatus(stderr, "sub", err)
}

var errTimeout = errors.New("-W timeout")

// filters returns the subscription's filters, checked before connecting.
func (f *subFlags) filters() ([]tern.TopicFilter, error) {
	if len(f.topics) == 0 {
		return nil, usagef("-t FILTER is required")
	}
	if f.qos < 0 || f.qos > 2 {
		return nil, usagef("-q %d: want 0, 1 or 2", f.qos)
	}
	if f.retainHandling < 0 || f.retainHandling > 2 {
		return nil, usagef("--retain-handling %d: want 0, 1 or 2", f.retainHandling)
	}
	if f.count < 0 || f.timeout < 0 {
		return nil, usagef("-C and -W must not be negative")
	}
	if f.share != "" {
		if err := packet.ValidString(f.share); err != nil || f.share == "" ||
			containsAny(f.share, "/+#") {
			return nil, usagef("--share %q: a group name has no /, + or #", f.share)
		}
	}
	var out []tern.TopicFilter
	for _, t := range f.topics {
		if err := packet.ValidateTopicFilter(t); err != nil {
			return nil, usagef("-t %q: %v", t, err)
		}
		if f.share != "" {
			t = "$share/" + f.share + "/" + t
		}
		out = append(out, tern.TopicFilter{Topic: t, QoS: byte(f.qos), NoLocal: f.noLocal,
			RetainAsPublished: f.retainAsPub, RetainHandling: byte(f.retainHandling)})
	}
	return out, nil
}

func containsAny(s, chars string) bool {
	for _, r := range s {
		for _, c := range chars {
			if r == c {
				return true
			}
		}
	}
	return false
}

// subscribeAndPrint connects, subscribes, and prints messages until -C is reached or ctx
// ends. Each message is acknowledged after its line has been written, so a message that
// was not printed is delivered again (to a persistent session, -c).
func subscribeAndPrint(ctx context.Context, broker string, opts []tern.Option, filters []tern.TopicFilter,
	f *subFlags, pr printer, stdout, stderr io.Writer) error {
	cl, err := tern.New(opts...)
	if err != nil {
		return err
	}
	defer disconnect(cl)
	// Subscribed before Connect: a resumed session (-c) delivers what it queued right after
	// CONNACK, and the route must exist by then.
	msgs, sub, err := cl.Subscribe(ctx, filters)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if err := cl.Connect(ctx); err != nil {
		return err // the client's error names the broker (without credentials)
	}
	err = sub.Wait(ctx)
	var se *tern.SubscribeError
	if errors.As(err, &se) {
		granted := 0
		for _, r := range sub.Results() {
			if r.Err != nil {
				fmt.Fprintf(stderr, "tern sub: %v\n", r.Err)
			} else {
				granted++
			}
		}
		if granted == 0 {
			return fmt.Errorf("subscribe: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if f.debug {
		fmt.Fprintf(stderr, "tern sub: connected to %s\n", redactURL(broker))
		for _, r := range sub.Results() {
			if r.Err == nil {
				fmt.Fprintf(stderr, "tern sub: subscribed to %s (QoS %d granted)\n", r.Filter, r.GrantedQoS)
			}
		}
	}
	// The identifier the client gave the subscription to route its messages is Tern's, not
	// the user's: %S, %j and --json leave it out, as mosquitto_sub (which sets none) prints.
	own := sub.Identifier()
	printed := 0
	buf := make([]byte, 0, 4096)
	for {
		var m *tern.Message
		select {
		case <-ctx.Done():
			return nil
		case m = <-msgs:
		}
		if m == nil {
			return errors.New("subscription closed")
		}
		if f.skipRetained && m.Retain {
			m.Ack()
			continue
		}
		if own != 0 {
			m.SubscriptionIDs = slices.DeleteFunc(m.SubscriptionIDs, func(id uint32) bool { return id == own })
		}
		buf = pr(buf[:0], m, time.Now())
		if _, err := stdout.Write(buf); err != nil {
			return fmt.Errorf("write: %w", err) // not acknowledged: a persistent session keeps it
		}
		m.Ack()
		printed++
		if f.count > 0 && printed >= f.count {
			return nil
		}
	}
}
