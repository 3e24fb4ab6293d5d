package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packet"
)

// stdin is what -s and -l read; tests replace it.
var stdin io.Reader = os.Stdin

// pubFlags are the options of tern pub.
type pubFlags struct {
	conn          connFlags
	topic         string
	message       string
	file          string
	stdinOne      bool
	stdinLines    bool
	null          bool
	qos           int
	retain        bool
	repeat        int
	interval      time.Duration
	rate          float64
	contentType   string
	responseTopic string
	correlation   string
	expiry        int64
	payloadFormat int
	userProps     stringList
	topicAlias    bool
	queue         string
	drainTimeout  time.Duration
	maxAttempts   int
	printStored   bool
}

func newPubFlags(stderr io.Writer) (*cliFlags, *pubFlags) {
	f := &pubFlags{}
	c := newCLIFlags("pub", "-t TOPIC (-m MSG | -f FILE | -s | -l | -n) [flags]", `Publishes messages, like mosquitto_pub, with every MQTT 5 property. Each refusal by the
broker is reported with its reason code. With --queue DIR, messages are first stored in a
durable queue in DIR and sent from there (store and forward); what could not be sent waits
in DIR for the next run.

A refusal never deletes a queued message: the drain pauses, says so on stderr, and the
message waits in DIR; with --max-attempts N it is set aside in DIR/dead after N refusals.

Exit status: 0 every message published (or stored, with --queue), 1 a refusal or a
runtime failure, 2 a usage error, 130 interrupted (Ctrl-C) before the input was all
published (or stored).`, stderr)
	c.String(&f.topic, "t,topic", "TOPIC", "", "topic to publish to (required, no wildcards)")
	c.String(&f.message, "m,message", "MSG", "", "message payload")
	c.String(&f.file, "f,file", "FILE", "", "send the whole of FILE as one message")
	c.Bool(&f.stdinOne, "s,stdin-file", "send the whole of standard input as one message")
	c.Bool(&f.stdinLines, "l,stdin-line", "send each line of standard input as a message (newline removed)")
	c.Bool(&f.null, "n,null-message", "send an empty message")
	c.Int(&f.qos, "q,qos", "QOS", 0, "quality of service: 0, 1 or 2 (default 1 with --queue)")
	c.Bool(&f.retain, "r,retain", "retain the message")
	c.Int(&f.repeat, "repeat", "N", 1, "publish the message N times (-m, -f, -s, -n)")
	c.Duration(&f.interval, "interval,repeat-delay", "DURATION", 0, "wait this long between repeats")
	c.fs.Float64Var(&f.rate, "rate", 0, "")
	c.add("rate", "PER_SECOND", "", "publish at most this many messages a second (0: as fast as the broker takes them)")
	c.String(&f.contentType, "content-type", "TYPE", "", "Content Type property")
	c.String(&f.responseTopic, "response-topic", "TOPIC", "", "Response Topic property")
	c.String(&f.correlation, "correlation-data", "DATA", "", "Correlation Data property")
	c.fs.Int64Var(&f.expiry, "expiry", 0, "")
	c.add("expiry", "SECONDS", "", "Message Expiry Interval property (0: none)")
	c.Int(&f.payloadFormat, "payload-format", "0|1", 0, "Payload Format Indicator property: 1 says the payload is UTF-8 text")
	c.Var(&f.userProps, "user-property", "KEY=VALUE", "User Property; repeat for more (order and repeats are kept)")
	c.Bool(&f.topicAlias, "topic-alias", "let the client replace the topic with a Topic Alias on repeats (within the broker's Topic Alias Maximum)")
	c.String(&f.queue, "queue", "DIR", "", "store messages durably in DIR first and send them from there; what cannot be sent waits there for the next run (with -c, the session's in-flight state too, in DIR/session)")
	c.Duration(&f.drainTimeout, "drain-timeout", "DURATION", 30*time.Second, "with --queue: how long to keep sending after the input ends")
	c.Int(&f.maxAttempts, "max-attempts", "N", 0, "with --queue: set a message aside in DIR/dead after N refusals by the broker (0: never; refused messages wait in DIR)")
	c.Bool(&f.printStored, "print-stored", "with --queue: print \"stored N\" on stdout once input message N is durably stored")
	addConnFlags(c, &f.conn)
	return c, f
}

func runPubCmd(args []string, stdout, stderr io.Writer) int {
	c, f := newPubFlags(stderr)
	if st := c.parse(args); st >= 0 {
		return st
	}
	if f.queue != "" && !c.set("q,qos") {
		f.qos = 1
	}
	tmpl, err := f.template()
	if err == nil {
		err = f.checkInput(c)
	}
	if err == nil {
		err = f.conn.v5Only(c, "content-type", "response-topic", "correlation-data", "expiry",
			"payload-format", "user-property", "topic-alias")
	}
	if err != nil {
		return exitStatus(stderr, "pub", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.queue != "" {
		return exitStatus(stderr, "pub", runSpool(ctx, f, tmpl, stdout, stderr))
	}
	return exitStatus(stderr, "pub", publishAllInput(ctx, f, tmpl, stderr))
}

// template returns the message every publish starts from: topic, QoS and properties.
func (f *pubFlags) template() (tern.PublishOptions, error) {
	m := tern.PublishOptions{Topic: f.topic, Retain: f.retain, ContentType: f.contentType, ResponseTopic: f.responseTopic}
	if f.topic == "" {
		return m, usagef("-t TOPIC is required")
	}
	if err := packet.ValidateTopicName(f.topic); err != nil {
		return m, usagef("-t %q: %v", f.topic, err)
	}
	if f.qos < 0 || f.qos > 2 {
		return m, usagef("-q %d: want 0, 1 or 2", f.qos)
	}
	m.QoS = byte(f.qos)
	if f.queue != "" && m.QoS == 0 {
		return m, usagef("--queue needs -q 1 or 2: a durable queue only makes sense for acknowledged messages")
	}
	if f.responseTopic != "" {
		if err := packet.ValidateTopicName(f.responseTopic); err != nil {
			return m, usagef("--response-topic %q: %v", f.responseTopic, err)
		}
	}
	if f.correlation != "" {
		m.CorrelationData = []byte(f.correlation)
	}
	if f.expiry < 0 || f.expiry > 1<<32-1 {
		return m, usagef("--expiry %d: want seconds in [0, 4294967295]", f.expiry)
	}
	m.MessageExpiry = time.Duration(f.expiry) * time.Second
	if f.payloadFormat != 0 && f.payloadFormat != 1 {
		return m, usagef("--payload-format %d: want 0 or 1", f.payloadFormat)
	}
	m.PayloadFormat = byte(f.payloadFormat)
	for _, kv := range f.userProps {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return m, usagef("--user-property %q: want KEY=VALUE", kv)
		}
		m.UserProperties = append(m.UserProperties, packet.UserProperty{Key: k, Value: v})
	}
	if f.repeat < 1 || f.interval < 0 || f.rate < 0 {
		return m, usagef("--repeat must be at least 1, --interval and --rate not negative")
	}
	return m, nil
}

// checkInput checks that exactly one message source is given (none is fine for --queue:
// the run only sends what waits in the queue), and that a file exists before connecting.
func (f *pubFlags) checkInput(c *cliFlags) error {
	n := 0
	for _, b := range []bool{c.set("m,message"), f.file != "", f.stdinOne, f.stdinLines, f.null} {
		if b {
			n++
		}
	}
	switch {
	case n == 0 && f.queue == "":
		return usagef("no message: give one of -m, -f, -s, -l or -n")
	case n > 1:
		return usagef("give only one of -m, -f, -s, -l and -n")
	case f.stdinLines && f.repeat > 1:
		return usagef("--repeat does not apply to -l")
	}
	if f.file != "" {
		if _, err := os.Stat(f.file); err != nil {
			return fmt.Errorf("-f: %w", err)
		}
	}
	return nil
}

// messages calls yield with each payload of the input, in order, until yield returns false.
// Reading standard input ends with ctx's error when ctx ends (Ctrl-C while waiting for input).
func (f *pubFlags) messages(ctx context.Context, yield func([]byte) bool) error {
	var one []byte
	in := &ctxReader{ctx: ctx, r: stdin, res: make(chan readResult, 1)}
	switch {
	case f.stdinLines:
		r := bufio.NewReaderSize(in, 64<<10)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 || err == nil {
				line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
				if !yield(line) {
					return nil
				}
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read standard input: %w", err)
			}
		}
	case f.stdinOne:
		b, err := io.ReadAll(in)
		if err != nil {
			return fmt.Errorf("read standard input: %w", err)
		}
		one = b
	case f.file != "":
		b, err := os.ReadFile(f.file)
		if err != nil {
			return fmt.Errorf("-f: %w", err)
		}
		one = b
	case f.null:
		one = []byte{}
	case f.message != "" || f.queue == "":
		one = []byte(f.message)
	default:
		return nil // --queue with no input: send what waits
	}
	for range f.repeat {
		if !yield(one) {
			return nil
		}
	}
	return nil
}

// ctxReader reads from r, but returns ctx's error as soon as ctx ends, even while a read
// is blocked (standard input from a terminal or an idle pipe). Each Read runs on a goroutine
// of its own into a private buffer; after ctx ends, a read still blocked is left to finish
// (or to end with the process): the reader must not be used any more.
type ctxReader struct {
	ctx  context.Context
	r    io.Reader
	buf  []byte
	res  chan readResult // capacity 1: the read goroutine never blocks on it
	busy bool            // a read goroutine is running
}

type readResult struct {
	n   int
	err error
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	if !c.busy {
		if cap(c.buf) < len(p) {
			c.buf = make([]byte, len(p))
		}
		b := c.buf[:len(p)]
		c.busy = true
		go func() {
			n, err := c.r.Read(b)
			c.res <- readResult{n, err}
		}()
	}
	select {
	case <-c.ctx.Done():
		return 0, c.ctx.Err()
	case r := <-c.res:
		c.busy = false
		return copy(p, c.buf[:r.n]), r.err
	}
}

// pacer spaces publishes: --interval between repeats, --rate overall.
type pacer struct {
	gap  time.Duration
	next time.Time
}

func newPacer(f *pubFlags) *pacer {
	gap := f.interval
	if f.rate > 0 {
		gap = max(gap, time.Duration(float64(time.Second)/f.rate))
	}
	return &pacer{gap: gap}
}

// wait returns when the next message may go, or ctx's error.
func (p *pacer) wait(ctx context.Context) error {
	if p.gap == 0 {
		return ctx.Err()
	}
	now := time.Now()
	if p.next.IsZero() || p.next.Before(now) {
		p.next = now
	}
	if d := p.next.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	p.next = p.next.Add(p.gap)
	return nil
}

// clientOptions returns the client options of the connection flags and extra, then a topic
// alias option when --topic-alias is set.
func (f *pubFlags) clientOptions(extra ...tern.Option) ([]tern.Option, error) {
	if f.topicAlias {
		extra = append(extra, tern.WithTopicAliases(true))
	}
	_, opts, err := f.conn.options(extra...)
	return opts, err
}

// pubWindow bounds how many publishes wait for their outcome at once: the client's own
// window (the broker's Receive Maximum) paces the wire; this bounds the tokens held here.
const pubWindow = 1024

// publishAllInput connects and publishes the input, pipelined: each outcome is checked in
// order and every refusal is reported with its reason code.
func publishAllInput(ctx context.Context, f *pubFlags, tmpl tern.PublishOptions, stderr io.Writer) error {
	opts, err := f.clientOptions()
	if err != nil {
		return err
	}
	cl, err := connect(ctx, opts)
	if err != nil {
		return err
	}
	defer disconnect(cl)
	type pending struct {
		n   int
		tok *tern.PublishToken
	}
	var (
		queue   []pending
		refused int
		n       int
		failed  error
	)
	settle := func(p pending) {
		err := p.tok.Wait(ctx)
		select {
		case <-p.tok.Done():
			err = p.tok.Err() // settled: its own outcome, even if ctx ended meanwhile
		default:
			if ctx.Err() != nil {
				return // interrupted before its outcome: the report says so once
			}
		}
		if err != nil {
			refused++
			fmt.Fprintf(stderr, "tern pub: message %d: %v\n", p.n, err)
		}
	}
	pace := newPacer(f)
	ierr := f.messages(ctx, func(payload []byte) bool {
		if failed = pace.wait(ctx); failed != nil {
			return false
		}
		n++
		m := tmpl
		m.Payload = payload
		tok, err := cl.PublishAsync(ctx, m)
		if err != nil {
			refused++
			fmt.Fprintf(stderr, "tern pub: message %d: %v\n", n, err)
			failed = err
			return !isFatal(err)
		}
		queue = append(queue, pending{n, tok})
		if len(queue) >= pubWindow {
			settle(queue[0])
			queue = queue[1:]
		}
		return true
	})
	for _, p := range queue {
		settle(p)
	}
	if err := cl.Flush(ctx); err != nil && failed == nil {
		failed = err
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w after %d messages", errInterrupted, n)
	case ierr != nil:
		return ierr
	case refused > 0:
		return fmt.Errorf("%d of %d messages not published", refused, n)
	}
	return nil
}

// isFatal reports whether a publish error ends the run: the client is gone or ctx ended.
// A refusal of one message (a reason code, an invalid message) lets the others go on.
func isFatal(err error) bool {
	return errors.Is(err, tern.ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// disconnect ends a client gracefully, bounded.
func disconnect(c *tern.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Disconnect(ctx)
}
