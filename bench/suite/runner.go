package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/ternmq/tern/bench/rawmqtt"
	"github.com/ternmq/tern/bench/stamp"
	"github.com/ternmq/tern/internal/brokertest"
	"github.com/ternmq/tern/internal/faultproxy"
)

// Options configure a suite run.
type Options struct {
	Runs       int            // runs of every scenario; the report shows medians
	Quick      bool           // small counts: a correctness check
	Only       *regexp.Regexp // scenarios to run; nil: all
	ProfileDir string         // if set, tern's children write CPU profiles here
	Sink       string         // receiving side of publish scenarios (SinkNames); "": SinkRaw
	Log        io.Writer      // progress lines
}

// Result is one library in one scenario in one run.
type Result struct {
	Scenario    string  `json:"scenario"`
	Lib         string  `json:"lib"`
	Run         int     `json:"run"`
	N           int     `json:"n"`
	Seconds     float64 `json:"seconds"`
	MsgPerSec   float64 `json:"msg_per_sec"`
	CPUUsPerMsg float64 `json:"cpu_us_per_msg"`
	AllocsPer   float64 `json:"allocs_per_msg"`
	BytesPer    float64 `json:"bytes_per_msg"`
	PeakHeapMiB float64 `json:"peak_heap_mib,omitempty"`
	P50Us       float64 `json:"p50_us,omitempty"`
	P99Us       float64 `json:"p99_us,omitempty"`
	ReconnectMs float64 `json:"reconnect_ms,omitempty"`
	// Read and write system calls and context switches of the library's process, per message.
	BrokerCPUPer float64 `json:"broker_cpu_us_per_msg,omitempty"` // Mosquitto's CPU per message
	ReadsPer     float64 `json:"reads_per_msg"`
	WritesPer    float64 `json:"writes_per_msg"`
	CswPer       float64 `json:"ctx_switches_per_msg"`
	// BrokerOverrun is the most QoS 1/2 messages Mosquitto had outstanding towards the sink
	// at once, when that exceeded the Receive Maximum the sink advertised.
	BrokerOverrun int          `json:"broker_overrun,omitempty"`
	Counts        stamp.Counts `json:"counts"`
	Child         *ChildResult `json:"child,omitempty"`
	Err           string       `json:"err,omitempty"`
	Skipped       string       `json:"skipped,omitempty"` // the library cannot run this yet
	// Sink is the receiving side of a publish scenario (Options.Sink) and SinkCPUUsPerMsg
	// the CPU its process spent per message: for an in-process sink the whole suite
	// process (the sink's read loop and the suite's bookkeeping), for SinkProc the child.
	Sink            string  `json:"sink,omitempty"`
	SinkCPUUsPerMsg float64 `json:"sink_cpu_us_per_msg,omitempty"`
	// SinkAckWrites is how many writes the sink made to acknowledge what it received: with
	// SinkPerAck and SinkProc one per acknowledgement, with SinkRaw one per read batch.
	SinkAckWrites int64 `json:"sink_ack_writes,omitempty"`
	// SinkChild is what a SinkProc sink's process measured.
	SinkChild *ChildResult `json:"sink_child,omitempty"`
}

// OK reports whether the run delivered every message exactly once and intact.
func (r *Result) OK() bool { return r.Err == "" }

// Suite is one session: one broker, every scenario, every run.
type Suite struct {
	opt     Options
	broker  *brokertest.Mosquitto
	mochi   *mochiBroker // started by the first scenario that needs it
	tmp     string
	jobs    int
	Results []Result
}

// New starts the suite's Mosquitto on a free loopback port.
func New(opt Options) (*Suite, error) {
	if opt.Runs < 1 {
		opt.Runs = 1
	}
	if opt.Log == nil {
		opt.Log = io.Discard
	}
	if opt.Sink == "" {
		opt.Sink = SinkRaw
	}
	if SinkInfo(opt.Sink) == "" {
		return nil, fmt.Errorf("unknown sink %q (want one of %s)", opt.Sink, strings.Join(SinkNames(), ", "))
	}
	tmp, err := os.MkdirTemp("", "tern-bench-")
	if err != nil {
		return nil, err
	}
	// The defaults of brokertest are the benchmark configuration: max_inflight_messages 20,
	// max_queued_messages 0, set_tcp_nodelay true, no persistence.
	// queue_qos0_messages: the drain scenarios queue QoS 0 for an offline session too.
	b, err := brokertest.Start(brokertest.Config{Dir: tmp, Extra: []string{"queue_qos0_messages true"}})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return &Suite{opt: opt, broker: b, tmp: tmp}, nil
}

// Close stops the broker and removes the suite's files.
func (s *Suite) Close() {
	if s.mochi != nil {
		s.mochi.close()
	}
	s.broker.Stop()
	os.RemoveAll(s.tmp)
}

// BrokerLog returns the broker's output, for diagnostics.
func (s *Suite) BrokerLog() string { return s.broker.Log() }

// Run runs every selected scenario opt.Runs times. Libraries take turns within each
// scenario, in an order that rotates from run to run.
func (s *Suite) Run() {
	scs := s.selected()
	for run := 1; run <= s.opt.Runs; run++ {
		for _, sc := range scs {
			libs := sc.Libs
			for i := range libs {
				lib := libs[(i+run-1)%len(libs)]
				r := s.runJob(sc, lib, run)
				s.Results = append(s.Results, r)
				s.progress(run, &r)
			}
		}
	}
}

func (s *Suite) selected() []Scenario {
	var out []Scenario
	for _, sc := range Scenarios() {
		if s.opt.Only == nil || s.opt.Only.MatchString(sc.Name) {
			out = append(out, sc)
		}
	}
	return out
}

func (s *Suite) progress(run int, r *Result) {
	status := "ok"
	switch {
	case r.Skipped != "":
		status = "SKIPPED: " + r.Skipped
	case !r.OK():
		status = "FAILED: " + r.Err
	}
	extra := ""
	switch {
	case r.P50Us > 0:
		extra = fmt.Sprintf(" p50 %.0f µs p99 %.0f µs", r.P50Us, r.P99Us)
	case r.ReconnectMs > 0:
		extra = fmt.Sprintf(" reconnect %.0f ms", r.ReconnectMs)
	case r.PeakHeapMiB > 0:
		extra = fmt.Sprintf(" peak heap %.1f MiB", r.PeakHeapMiB)
	}
	fmt.Fprintf(s.opt.Log, "run %d/%d %-20s %-15s %9.0f msg/s %8.2f µs/msg CPU %7.1f allocs/msg%s  %s\n",
		run, s.opt.Runs, r.Scenario, r.Lib, r.MsgPerSec, r.CPUUsPerMsg, r.AllocsPer, extra, status)
}

// runJob runs one library once in one scenario.
func (s *Suite) runJob(sc Scenario, lib Lib, run int) Result {
	s.jobs++
	id := fmt.Sprintf("%d-%d", os.Getpid(), s.jobs)
	n := sc.count(lib, s.opt.Quick)
	job := Job{
		Kind: sc.Kind, Lib: lib.Adapter, QoS: sc.QoS, Size: sc.Size, N: n, Workers: sc.Workers,
		Mode: sc.Mode, ZeroCopy: lib.ZeroCopy, Inline: lib.Inline, Queue: lib.Queue, Addr: s.broker.Addr,
		Topic: "bench/" + id, ClientID: "bench-" + lib.Name + "-" + id, Run: rand.Uint32(),
		Heap: sc.Kind == KindSlow || sc.Kind == KindQueue, Pool: lib.Pool,
		V311: lib.V311, OneAtATime: lib.OneAtATime,
	}
	if lib.Store != "" {
		job.Store = lib.Store
	}
	if lib.Store == "file" {
		job.StoreDir = filepath.Join(s.tmp, "store-"+id)
		defer os.RemoveAll(job.StoreDir)
	}
	if strings.HasPrefix(lib.Queue, "file") {
		job.QueueDir = filepath.Join(s.tmp, "queue-"+id)
		defer os.RemoveAll(job.QueueDir)
	}
	if s.opt.ProfileDir != "" && lib.Adapter == "tern" {
		job.Profile = filepath.Join(s.opt.ProfileDir, fmt.Sprintf("%s-%s-run%d.pprof", sc.Name, lib.Name, run))
	}
	r := Result{Scenario: sc.Name, Lib: lib.Name, Run: run, N: n}
	at, err := s.place(sc, lib, &job)
	switch {
	case err != nil: // the scenario cannot be placed: reported below
	case sc.Kind == KindPublish || sc.Kind == KindConc || sc.Kind == KindPipe || sc.Kind == KindQueue:
		err = s.runPublish(job, at, &r)
	case sc.Kind == KindReceive || sc.Kind == KindSlow:
		err = s.runReceive(job, at, &r)
	case sc.Kind == KindDrain:
		err = s.runDrain(job, &r)
	case sc.Kind == KindLatency:
		err = s.runLatency(job, &r)
	case sc.Kind == KindReconnect:
		err = s.runReconnect(job, &r)
	default:
		err = fmt.Errorf("unknown kind %q", sc.Kind)
	}
	switch {
	case errors.Is(err, errUnavailable):
		r.Skipped = err.Error()
	case err != nil:
		r.Err = err.Error()
	}
	return r
}

// site is where the parent's own clients (the sink and the feeder) meet a job.
type site struct {
	addr    string // the broker's TCP listener
	sinkQoS byte   // the QoS the sink subscribes at
}

// place points job at the scenario's broker (for a WebSocket row, at its WebSocket
// listener) and returns where the sink and the feeder connect.
func (s *Suite) place(sc Scenario, lib Lib, job *Job) (site, error) {
	switch sc.Broker {
	case "":
		if lib.WS {
			return site{}, fmt.Errorf("%s: Mosquitto 2.0.11 serves no WebSocket here", lib.Name)
		}
		return site{addr: s.broker.Addr, sinkQoS: 2}, nil
	case brokerMochi:
	default:
		return site{}, fmt.Errorf("unknown broker %q", sc.Broker)
	}
	switch {
	case sc.Kind == KindReceive && sc.QoS > 0:
		// QoS 1/2 routed to the receiver can deadlock mochi v2.7.9 (see transportScenarios).
		return site{}, fmt.Errorf("%s: receiving QoS %d on mochi", sc.Name, sc.QoS)
	case sc.Kind != KindPublish && sc.Kind != KindConc && sc.Kind != KindPipe && sc.Kind != KindReceive:
		return site{}, fmt.Errorf("%s: kind %q does not run on mochi", sc.Name, sc.Kind)
	}
	if s.mochi == nil {
		m, err := startMochi()
		if err != nil {
			return site{}, err
		}
		s.mochi = m
	}
	job.Addr, job.WS = s.mochi.tcpAddr, lib.WS
	if lib.WS {
		job.Addr = s.mochi.wsAddr
	}
	// A QoS 0 sink keeps QoS 1 messages from ever being routed to a client on mochi (see
	// transportScenarios); mochiWritesPending keeps it from dropping any.
	return site{addr: s.mochi.tcpAddr, sinkQoS: 0}, nil
}

// Timeouts of the parent's waits.
const (
	readyTimeout = 30 * time.Second
	workTimeout  = 5 * time.Minute
	stopTimeout  = 30 * time.Second
)

// fill computes the per-message figures from what the child measured.
func (r *Result) fill(cr *ChildResult, from, to int64) {
	r.Child = cr
	if to > from {
		r.Seconds = float64(to-from) / 1e9
		r.MsgPerSec = float64(r.N) / r.Seconds
	}
	n := float64(r.N)
	r.CPUUsPerMsg = float64(cr.UserNs+cr.SysNs) / 1e3 / n
	r.AllocsPer = float64(cr.Mallocs) / n
	r.BytesPer = float64(cr.Bytes) / n
	r.BrokerCPUPer = float64(cr.BrokerNs) / 1e3 / n
	r.ReadsPer = float64(cr.ReadCalls) / n
	r.WritesPer = float64(cr.WriteCalls) / n
	r.CswPer = float64(cr.CtxSwitches) / n
	r.PeakHeapMiB = float64(cr.PeakHeap) / (1 << 20)
}

// waitChecker waits until k has every message, or until nothing new arrived for idleLimit,
// or the timeout.
func waitChecker(k *stamp.Checker, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	var lastUnique uint64
	lastChange := time.Now()
	for !k.Done() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		c, _ := k.Counts()
		if c.Unique != lastUnique {
			lastUnique, lastChange = c.Unique, time.Now()
		} else if time.Since(lastChange) > idleLimit {
			return
		}
	}
}

// startChild starts the child and waits until it is connected and ready.
func (s *Suite) startChild(job Job) (*proc, error) {
	p, err := startProc(job)
	if err != nil {
		return nil, err
	}
	if job.Addr == s.broker.Addr {
		p.brokerPid = s.broker.Pid()
	}
	if err := p.expect("ready", readyTimeout); err != nil {
		return nil, err
	}
	return p, nil
}

// startSunk starts the sink (see startSink), then the child; on error neither is left
// running.
func (s *Suite) startSunk(job Job, at site) (*sinkSide, *proc, error) {
	sk, err := s.startSink(job, at)
	if err != nil {
		return nil, nil, err
	}
	p, err := s.startChild(job)
	if err != nil {
		sk.close()
		return nil, nil, err
	}
	return sk, p, nil
}

// runPublish: the child publishes, the sink checks.
func (s *Suite) runPublish(job Job, at site, r *Result) error {
	sk, p, err := s.startSunk(job, at)
	if err != nil {
		return err
	}
	defer sk.close()
	if err := sk.begin(); err != nil {
		p.kill()
		return err
	}
	p.say("go")
	if err := p.expect("sent", workTimeout); err != nil {
		return err
	}
	cr, o, err := finishSunk(p, sk, workTimeout, r)
	if err != nil {
		return err
	}
	r.fill(cr, cr.Start, o.last.UnixNano())
	if o.unacked > brokerWindow {
		r.BrokerOverrun = o.unacked
	}
	return errors.Join(childErr(cr), o.err, r.Counts.Verdict(false))
}

func childErr(cr *ChildResult) error {
	if cr.Err != "" {
		return fmt.Errorf("child: %s", cr.Err)
	}
	return nil
}

// finishSunk waits up to wait for the sink to have every message (see collect), stops the
// child and takes the sink's counts and CPU into r.
func finishSunk(p *proc, sk *sinkSide, wait time.Duration, r *Result) (*ChildResult, sinkOutcome, error) {
	o, err := sk.collect(wait)
	if err != nil {
		p.kill()
		return nil, o, err
	}
	cr, err := p.finish(stopTimeout)
	if err != nil {
		return nil, o, err
	}
	r.Counts = o.counts
	r.Sink, r.SinkAckWrites, r.SinkChild = sk.kind, o.ackWrites, o.child
	if r.N > 0 {
		r.SinkCPUUsPerMsg = float64(o.cpuNs) / 1e3 / float64(r.N)
	}
	return cr, o, nil
}

// finishCounted stops a child that checked the messages itself (it received them) and
// takes its counts into r.
func finishCounted(p *proc, r *Result) (*ChildResult, error) {
	cr, err := p.finish(stopTimeout)
	if err != nil {
		return nil, err
	}
	if cr.Counts == nil {
		return nil, errors.Join(childErr(cr), errors.New("child reported no counts"))
	}
	r.Counts = *cr.Counts
	return cr, nil
}

// feeder is the parent's raw publisher of a job's stamped messages, for a receiving child.
type feeder struct {
	*rawmqtt.Client
	job  Job
	f    *stamp.Format
	tmpl *rawmqtt.Template
}

// dialFeeder connects the job's feeder to addr.
func dialFeeder(ctx context.Context, addr string, job Job) (*feeder, error) {
	c, err := rawmqtt.Dial(ctx, addr, rawmqtt.Options{ClientID: "feed-" + job.ClientID, ReceiveMax: brokerWindow})
	if err != nil {
		return nil, fmt.Errorf("feeder: %w", err)
	}
	f, _ := stamp.NewFormat(job.Run, job.Size)
	return &feeder{Client: c, job: job, f: f, tmpl: rawmqtt.NewTemplate(job.Topic, job.QoS, f.New())}, nil
}

// publishAll publishes messages 0 to N-1 of the job.
func (fd *feeder) publishAll(ctx context.Context) error {
	return fd.Publish(ctx, fd.tmpl, fd.job.N, func(i int, b []byte) { fd.f.Stamp(b, uint64(i), 0) })
}

// runReceive: the raw feeder in this process publishes, the child receives and checks.
func (s *Suite) runReceive(job Job, at site, r *Result) error {
	p, err := s.startChild(job)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), workTimeout)
	defer cancel()
	fd, err := dialFeeder(ctx, at.addr, job)
	if err != nil {
		p.kill()
		return err
	}
	defer fd.Close()
	p.say("go")
	if err := p.expect("started", readyTimeout); err != nil {
		return err
	}
	feedStart := time.Now().UnixNano()
	ferr := fd.publishAll(ctx)
	p.say("fed")
	if ferr != nil {
		p.kill()
		return fmt.Errorf("feeder: %w", ferr)
	}
	if err := p.expect("sent", workTimeout); err != nil {
		return err
	}
	cr, err := finishCounted(p, r)
	if err != nil {
		return err
	}
	r.fill(cr, feedStart, cr.LastRecv)
	return errors.Join(childErr(cr), cr.Counts.Verdict(false))
}

// runDrain: the child keeps a session with a subscription and disconnects; the raw feeder
// fills the broker's queue for it; then the child resumes the session and drains it.
func (s *Suite) runDrain(job Job, r *Result) error {
	p, err := s.startChild(job) // ready: the session and its subscription exist, offline
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), workTimeout)
	defer cancel()
	fd, err := dialFeeder(ctx, s.broker.Addr, job)
	if err != nil {
		p.kill()
		return err
	}
	defer fd.Close()
	ferr := fd.publishAll(ctx)
	if ferr == nil {
		ferr = fd.WaitAcked(ctx)
	}
	if ferr == nil {
		// The broker handles one client's packets in order: once it answers this SUBSCRIBE
		// every PUBLISH before it, QoS 0 included, is queued for the offline session.
		ferr = fd.Subscribe(ctx, job.Topic+"/barrier", 0)
	}
	if ferr != nil {
		p.kill()
		return fmt.Errorf("feeder: %w", ferr)
	}
	p.say("go")
	p.say("fed")
	if err := p.expect("sent", workTimeout); err != nil {
		return err
	}
	cr, err := finishCounted(p, r)
	if err != nil {
		return err
	}
	r.fill(cr, cr.Start, cr.LastRecv)
	return errors.Join(childErr(cr), cr.Counts.Verdict(false))
}

// runLatency: both ends in the child.
func (s *Suite) runLatency(job Job, r *Result) error {
	p, err := s.startChild(job)
	if err != nil {
		return err
	}
	p.say("go")
	if err := p.expect("sent", workTimeout); err != nil {
		return err
	}
	cr, err := p.finish(stopTimeout)
	if err != nil {
		return err
	}
	r.fill(cr, cr.Start, cr.Sent)
	r.P50Us, r.P99Us = float64(cr.P50)/1e3, float64(cr.P99)/1e3
	if cr.Counts == nil {
		return errors.Join(childErr(cr), errors.New("child reported no counts"))
	}
	r.Counts = *cr.Counts
	return errors.Join(childErr(cr), cr.Counts.Verdict(false))
}

// runReconnect: the child publishes through a proxy that holds its messages back, then
// cuts the connection; the sink, connected straight to the broker, times the redelivery.
func (s *Suite) runReconnect(job Job, r *Result) error {
	px, err := faultproxy.Start("127.0.0.1:0", s.broker.Addr)
	if err != nil {
		return err
	}
	defer px.Close()
	job.Addr = px.Addr()
	sk, p, err := s.startSunk(job, site{addr: s.broker.Addr, sinkQoS: 2})
	if err != nil {
		return err
	}
	defer sk.close()
	if err := sk.begin(); err != nil {
		p.kill()
		return err
	}
	px.Hold(true) // what the child sends from now on stays in flight, unseen by the broker
	p.say("go")
	if err := p.expect("sent", readyTimeout); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for px.HeldPublishes() < job.N && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if held := px.HeldPublishes(); held < job.N {
		p.kill()
		return fmt.Errorf("only %d of %d publishes in flight before the cut", held, job.N)
	}
	cut := time.Now()
	px.Cut()
	cr, o, err := finishSunk(p, sk, 30*time.Second, r)
	if err != nil {
		return err
	}
	r.fill(cr, cut.UnixNano(), o.last.UnixNano())
	if o.last.After(cut) {
		r.ReconnectMs = float64(o.last.Sub(cut)) / 1e6
	}
	// Redelivery after a cut may legitimately duplicate a QoS 1 message: counted, not failed.
	return errors.Join(childErr(cr), o.err, r.Counts.Verdict(true))
}
