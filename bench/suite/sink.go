package suite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ternmq/tern/bench/rawmqtt"
	"github.com/ternmq/tern/bench/stamp"
	"github.com/ternmq/tern/packet"
)

// Sinks: how the receiving side of the publish scenarios (pub, conc, pipe, queue, reconnect
// and the WebSocket publish rows) takes the messages a library publishes (Options.Sink).
// Every sink checks every message with a stamp.Checker.
const (
	// SinkRaw, the default: the raw client in the suite's own process, acknowledging the
	// messages of each read in one write. Well under 1 µs of CPU per message.
	SinkRaw = "raw"
	// SinkPerAck: the same raw client, still in the suite's process, writing each
	// acknowledgement on its own (one PUBACK per write(2)).
	SinkPerAck = "perack"
	// SinkProc: the raw client acknowledging each message with its own write, in a child
	// process of its own, as a harness that runs every client in a separate process does.
	SinkProc = "proc"
)

// sinkInfo says what each sink is, for the report's conditions and -help.
var sinkInfo = map[string]string{
	SinkRaw:    "raw client in the suite's process, one write per read batch of acknowledgements",
	SinkPerAck: "raw client in the suite's process, one write per acknowledgement",
	SinkProc:   "raw client in a child process of its own, one write per acknowledgement",
}

// SinkNames lists the valid values of Options.Sink, the default first.
func SinkNames() []string { return []string{SinkRaw, SinkPerAck, SinkProc} }

// SinkInfo describes sink (one of SinkNames) in a few words; "" for an unknown name.
func SinkInfo(sink string) string { return sinkInfo[sink] }

// sinkSide is the receiving side of one publish job: started (subscribed) before the
// publishing child, told when the workload begins, and collected once the child is done.
type sinkSide struct {
	kind string
	// In this process (SinkRaw, SinkPerAck).
	raw    *rawmqtt.Client
	k      *stamp.Checker
	before usage
	// In a child process (SinkProc).
	p    *proc
	done bool // raw is closed, or p has exited
}

// sinkOutcome is what a sink saw between begin and collect.
type sinkOutcome struct {
	counts    stamp.Counts
	last      time.Time    // when the last new message arrived
	unacked   int          // most QoS 1/2 messages owed an acknowledgement at once
	cpuNs     int64        // CPU the sink's process spent in the meantime
	ackWrites int64        // writes of acknowledgements
	child     *ChildResult // a child sink's figures
	err       error        // the sink child's own failure, if any
}

// startSink subscribes the job's sink, of the suite's kind, to the job's topic at
// at.sinkQoS.
func (s *Suite) startSink(job Job, at site) (*sinkSide, error) {
	ss := &sinkSide{kind: s.opt.Sink}
	if ss.kind == SinkProc {
		sj := Job{
			Kind: KindSink, Lib: "raw", QoS: at.sinkQoS, Size: job.Size, N: job.N, Addr: at.addr,
			Topic: job.Topic, ClientID: "sink-" + job.ClientID, Run: job.Run,
		}
		p, err := s.startChild(sj)
		if err != nil {
			return nil, fmt.Errorf("sink: %w", err)
		}
		ss.p = p
		return ss, nil
	}
	f, err := stamp.NewFormat(job.Run, job.Size)
	if err != nil {
		return nil, err
	}
	ss.k = stamp.NewChecker(f, job.N)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rawmqtt.Dial(ctx, at.addr, rawmqtt.Options{
		ClientID: "sink-" + job.ClientID, ReceiveMax: brokerWindow, AckEach: ss.kind == SinkPerAck,
	})
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	c.OnMessage(func(p *packet.Publish) { ss.k.Check(p.Payload) })
	if err := c.Subscribe(ctx, job.Topic, at.sinkQoS); err != nil {
		c.Close()
		return nil, fmt.Errorf("sink: %w", err)
	}
	ss.raw = c
	return ss, nil
}

// begin marks the start of the workload: a child sink takes its first snapshot, this
// process takes one for an in-process sink.
func (ss *sinkSide) begin() error {
	if ss.p == nil {
		ss.before = snapshot()
		return nil
	}
	ss.p.say("go")
	if err := ss.p.expect("started", readyTimeout); err != nil {
		ss.done = true
		return fmt.Errorf("sink: %w", err)
	}
	return nil
}

// collect waits up to wait for the sink to have every message, or for nothing new to
// arrive for idleLimit (the publisher is done), disconnects it, so its figures are final,
// and returns what it saw.
func (ss *sinkSide) collect(wait time.Duration) (sinkOutcome, error) {
	if ss.p == nil {
		waitChecker(ss.k, wait)
		ss.raw.Close() // returns once the read loop, and its last acknowledgement, is done
		ss.done = true
		after := snapshot()
		var o sinkOutcome
		o.counts, o.last = ss.k.Counts()
		o.unacked, o.ackWrites = ss.raw.MaxUnacked(), ss.raw.AckWrites()
		o.cpuNs = after.user + after.sys - ss.before.user - ss.before.sys
		return o, nil
	}
	ss.p.say("fed") // from now on the child gives up idleLimit after the last new message
	if err := ss.p.expect("sent", wait); err != nil {
		ss.done = true
		return sinkOutcome{}, fmt.Errorf("sink: %w", err)
	}
	cr, err := ss.p.finish(stopTimeout)
	ss.done = true
	if err != nil {
		return sinkOutcome{}, fmt.Errorf("sink: %w", err)
	}
	if cr.Counts == nil {
		return sinkOutcome{}, errors.Join(sinkErr(cr), errors.New("sink reported no counts"))
	}
	o := sinkOutcome{
		counts: *cr.Counts, unacked: cr.MaxUnacked, cpuNs: cr.UserNs + cr.SysNs,
		ackWrites: cr.AckWrites, child: cr, err: sinkErr(cr),
	}
	if cr.LastRecv > 0 {
		o.last = time.Unix(0, cr.LastRecv)
	}
	return o, nil
}

func sinkErr(cr *ChildResult) error {
	if cr.Err != "" {
		return fmt.Errorf("sink: %s", cr.Err)
	}
	return nil
}

// close disconnects an in-process sink or ends a child sink that is still running.
func (ss *sinkSide) close() {
	switch {
	case ss.done:
	case ss.raw != nil:
		ss.raw.Close()
	case ss.p != nil:
		ss.p.kill()
	}
	ss.done = true
}

// setupSink is the child's side of SinkProc: a raw client that checks every message and
// acknowledges each with a write of its own, until it has them all or the parent said
// "fed" and nothing new came for idleLimit.
func (c *child) setupSink(ctx context.Context, f *stamp.Format) (*workload, error) {
	j := c.job
	rc, err := rawmqtt.Dial(ctx, j.Addr, rawmqtt.Options{ClientID: j.ClientID, ReceiveMax: brokerWindow, AckEach: true})
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	w := &workload{checker: stamp.NewChecker(f, j.N), close: func() { rc.Close() }, sink: rc}
	// After "stop": the read loop ends with its last acknowledgement written, so the
	// figures taken after finish are final.
	w.finish = func() error { rc.Close(); return nil }
	h := c.receiver(w.checker, false)
	rc.OnMessage(func(p *packet.Publish) { h.handle(p.Payload) })
	if err := rc.Subscribe(ctx, j.Topic, j.QoS); err != nil {
		rc.Close()
		return nil, fmt.Errorf("sink: subscribe: %w", err)
	}
	w.work = func(ctx context.Context, _ *payloads) error { return h.wait(ctx) }
	return w, nil
}
