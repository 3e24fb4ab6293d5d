package suite

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ternmq/tern/bench/adapters"
	"github.com/ternmq/tern/bench/rawmqtt"
	"github.com/ternmq/tern/bench/stamp"
)

// payloads stamps message i with sequence number i and, for latency jobs, the send time.
type payloads struct {
	f     *stamp.Format
	timed bool
}

func (p *payloads) New() []byte { return p.f.New() }

func (p *payloads) Stamp(buf []byte, i int) {
	var ts int64
	if p.timed {
		ts = time.Now().UnixNano()
	}
	p.f.Stamp(buf, uint64(i), ts)
}

// child is the running side of a child process.
type child struct {
	job   Job
	out   *json.Encoder
	outMu sync.Mutex
	lines chan string // from the parent
	fed   atomic.Bool // the parent's feeder has sent everything
}

// RunChild runs one job described by jobJSON, talking to the parent over in and out. It
// returns an error only when it could not report one.
func RunChild(jobJSON string, in io.Reader, out io.Writer) error {
	var job Job
	if err := json.Unmarshal([]byte(jobJSON), &job); err != nil {
		return fmt.Errorf("child: job: %w", err)
	}
	c := &child{job: job, out: json.NewEncoder(out), lines: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			if sc.Text() == "fed" {
				c.fed.Store(true)
				continue
			}
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	res := c.run()
	return c.emit(Event{Event: "result", Result: res})
}

func (c *child) emit(e Event) error {
	if e.T == 0 {
		e.T = time.Now().UnixNano()
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.out.Encode(e)
}

// waitLine waits for the parent to say word.
func (c *child) waitLine(word string) error {
	for l := range c.lines {
		if l == word {
			return nil
		}
	}
	return fmt.Errorf("child: parent went away before %q", word)
}

// usage is a snapshot of what the process has consumed.
type usage struct {
	user, sys int64
	csw       int64 // context switches, voluntary and not, of all threads
	io        procIO
	ms        runtime.MemStats
}

func snapshot() usage {
	var u usage
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	u.user = ru.Utime.Nano()
	u.sys = ru.Stime.Nano()
	u.csw = int64(ru.Nvcsw + ru.Nivcsw)
	u.io = readProcIO()
	runtime.ReadMemStats(&u.ms)
	return u
}

// procIO is the process's count of read and write system calls (read(2), write(2) and
// their vectored forms: every socket read and write of the libraries here), from
// /proc/self/io; zero where that file does not exist.
type procIO struct{ reads, writes int64 }

func readProcIO() procIO {
	var p procIO
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return p
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "syscr":
			p.reads = n
		case "syscw":
			p.writes = n
		}
	}
	return p
}

// heapSampler records the peak of live heap objects every few milliseconds.
type heapSampler struct {
	stop chan struct{}
	done chan struct{}
	base uint64
	peak atomic.Uint64
}

const heapMetric = "/memory/classes/heap/objects:bytes"

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	h.base = s[0].Value.Uint64()
	go func() {
		defer close(h.done)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > h.peak.Load() {
				h.peak.Store(v)
			}
		}
	}()
	return h
}

func (h *heapSampler) end() uint64 {
	close(h.stop)
	<-h.done
	if p := h.peak.Load(); p > h.base {
		return p - h.base
	}
	return 0
}

// run performs the job and fills in the result; any failure ends up in Result.Err.
func (c *child) run() *ChildResult {
	res := &ChildResult{}
	fail := func(err error) *ChildResult {
		res.Err = err.Error()
		return res
	}
	f, err := stamp.NewFormat(c.job.Run, c.job.Size)
	if err != nil {
		return fail(err)
	}
	src := &payloads{f: f, timed: c.job.Kind == KindLatency}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	w, err := c.setup(ctx, f)
	if err != nil {
		res.Unavailable = errors.Is(err, adapters.ErrUnavailable)
		return fail(fmt.Errorf("setup: %w", err))
	}
	defer w.close()
	if err := c.emit(Event{Event: "ready"}); err != nil {
		return fail(err)
	}
	if err := c.waitLine("go"); err != nil {
		return fail(err)
	}

	var hs *heapSampler
	if c.job.Heap {
		hs = startHeapSampler()
	}
	if c.job.Profile != "" {
		pf, err := os.Create(c.job.Profile)
		if err != nil {
			return fail(err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fail(err)
		}
	}
	before := snapshot()
	res.Start = time.Now().UnixNano()
	c.emit(Event{Event: "started", T: res.Start})
	werr := w.work(ctx, src)
	res.Sent = time.Now().UnixNano()
	c.emit(Event{Event: "sent", T: res.Sent})
	if err := c.waitLine("stop"); err != nil && werr == nil {
		werr = err
	}
	if w.finish != nil {
		if err := w.finish(); err != nil && werr == nil {
			werr = err
		}
	}
	after := snapshot()
	if c.job.Profile != "" {
		pprof.StopCPUProfile()
	}
	if hs != nil {
		res.PeakHeap = hs.end()
	}
	res.UserNs = after.user - before.user
	res.SysNs = after.sys - before.sys
	res.Mallocs = after.ms.Mallocs - before.ms.Mallocs
	res.Bytes = after.ms.TotalAlloc - before.ms.TotalAlloc
	res.GCs = after.ms.NumGC - before.ms.NumGC
	res.CtxSwitches = after.csw - before.csw
	res.ReadCalls = after.io.reads - before.io.reads
	res.WriteCalls = after.io.writes - before.io.writes
	if w.checker != nil {
		counts, last := w.checker.Counts()
		res.Counts = &counts
		if !last.IsZero() {
			res.LastRecv = last.UnixNano()
		}
	}
	if w.sink != nil {
		res.MaxUnacked, res.AckWrites = w.sink.MaxUnacked(), w.sink.AckWrites()
	}
	if len(w.lat) > 0 {
		slices.Sort(w.lat)
		res.P50 = percentile(w.lat, 0.50)
		res.P99 = percentile(w.lat, 0.99)
		res.Max = w.lat[len(w.lat)-1]
	}
	if werr != nil {
		res.Err = werr.Error()
	}
	return res
}

// percentile returns the p-quantile of sorted samples (nearest rank).
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// workload is a job made ready: connected, subscribed, waiting for "go".
type workload struct {
	work    func(ctx context.Context, src *payloads) error
	finish  func() error // after "stop", before the final snapshot
	close   func()
	checker *stamp.Checker
	sink    *rawmqtt.Client // a sink job's client, for its acknowledgement figures
	lat     []int64
}

func (c *child) config(suffix string) adapters.Config {
	return adapters.Config{
		Addr: c.job.Addr, ClientID: c.job.ClientID + suffix, Topic: c.job.Topic,
		ReceiveMax: brokerWindow, ZeroCopy: c.job.ZeroCopy, Inline: c.job.Inline,
		Session: c.job.Kind == KindReconnect || c.job.Kind == KindDrain, Queue: c.job.Queue, QueueDir: c.job.QueueDir,
		Pool: c.job.Pool, V311: c.job.V311, Store: c.job.Store, StoreDir: c.job.StoreDir,
		WS: c.job.WS,
	}
}

func (c *child) connect(ctx context.Context, suffix string) (adapters.Client, error) {
	cl, err := adapters.New(c.job.Lib, c.config(suffix))
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := cl.Connect(cctx); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return cl, nil
}

func disconnect(cl adapters.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl.Disconnect(ctx)
}

// setup connects the job's clients and returns its workload.
func (c *child) setup(ctx context.Context, f *stamp.Format) (*workload, error) {
	j := c.job
	if j.Kind == KindSink {
		return c.setupSink(ctx, f)
	}
	cl, err := c.connect(ctx, "")
	if err != nil {
		return nil, err
	}
	w := &workload{close: func() { disconnect(cl) }}
	switch j.Kind {
	case KindPublish:
		w.work = func(ctx context.Context, src *payloads) error {
			if j.Lib == "raw" && !j.OneAtATime {
				return adapters.Pipelined(ctx, cl, j.QoS, j.N, brokerWindow, src)
			}
			buf := src.New()
			for i := range j.N {
				src.Stamp(buf, i)
				if err := cl.Publish(ctx, j.QoS, buf); err != nil {
					return fmt.Errorf("message %d: %w", i, err)
				}
			}
			return nil
		}
	case KindConc:
		w.work = func(ctx context.Context, src *payloads) error {
			if j.Lib == "raw" {
				return adapters.Pipelined(ctx, cl, j.QoS, j.N, brokerWindow, src)
			}
			return adapters.PublishConcurrent(ctx, cl, j.QoS, j.N, j.Workers, src)
		}
	case KindPipe:
		w.work = func(ctx context.Context, src *payloads) error {
			return adapters.Pipelined(ctx, cl, j.QoS, j.N, brokerWindow, src)
		}
	case KindReconnect:
		// The publishes go out in the background and complete after the cut; "sent" tells
		// the parent they were issued.
		res := make(chan error, 1)
		w.work = func(ctx context.Context, src *payloads) error {
			go func() { res <- adapters.Pipelined(ctx, cl, j.QoS, j.N, brokerWindow, src) }()
			return nil
		}
		w.finish = func() error {
			select {
			case err := <-res:
				return err
			case <-time.After(20 * time.Second):
				return errors.New("publishes not complete 20 s after the cut")
			}
		}
	case KindQueue:
		q, ok := cl.(adapters.Enqueuer)
		if !ok {
			disconnect(cl)
			return nil, fmt.Errorf("%s has no durable queue", j.Lib)
		}
		w.work = func(ctx context.Context, src *payloads) error {
			return enqueueConcurrent(ctx, q, j.N, max(j.Workers, 1), src)
		}
	case KindReceive, KindSlow:
		w.checker = stamp.NewChecker(f, j.N)
		h := c.receiver(w.checker, j.Kind == KindSlow)
		if err := cl.Subscribe(ctx, j.QoS, j.Mode, h.handle); err != nil {
			w.close()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		w.work = func(ctx context.Context, _ *payloads) error { return h.wait(ctx) }
	case KindDrain:
		return c.setupDrain(ctx, f, cl)
	case KindLatency:
		return c.setupLatency(ctx, f, cl, w)
	default:
		w.close()
		return nil, fmt.Errorf("unknown kind %q", j.Kind)
	}
	return w, nil
}

// setupDrain makes the session the broker queues the backlog for: cl (the first
// connection, Clean Start) subscribes and disconnects, keeping the session. The workload
// resumes it with a second client of the library whose handler is in place before CONNACK.
func (c *child) setupDrain(ctx context.Context, f *stamp.Format, cl adapters.Client) (*workload, error) {
	j := c.job
	if _, ok := cl.(adapters.Drainer); !ok {
		disconnect(cl)
		return nil, fmt.Errorf("%s cannot resume a session with its handler ready: %w", j.Lib, adapters.ErrUnavailable)
	}
	err := cl.Subscribe(ctx, j.QoS, j.Mode, func([]byte) {})
	disconnect(cl)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	cfg := c.config("")
	cfg.Resume = true
	d, err := adapters.New(j.Lib, cfg)
	if err != nil {
		return nil, err
	}
	w := &workload{checker: stamp.NewChecker(f, j.N), close: func() { disconnect(d) }}
	h := c.receiver(w.checker, false)
	w.work = func(ctx context.Context, _ *payloads) error {
		if err := d.(adapters.Drainer).SubscribeConnect(ctx, j.QoS, j.Mode, h.handle); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
		return h.wait(ctx)
	}
	return w, nil
}

// receiver checks each message and wakes the waiter when the last one arrives.
type receiver struct {
	k     *stamp.Checker
	fed   *atomic.Bool // the parent's feeder is done
	done  chan struct{}
	once  sync.Once
	slow  bool
	count int // handlers run on one goroutine per subscription in every library
}

func (c *child) receiver(k *stamp.Checker, slow bool) *receiver {
	return &receiver{k: k, fed: &c.fed, done: make(chan struct{}), slow: slow}
}

// handle is the subscriber's handler.
func (r *receiver) handle(p []byte) {
	r.k.Check(p)
	r.count++
	if r.slow && r.count%10 == 0 {
		time.Sleep(time.Millisecond) // lag behind the feeder: about 0.1 ms per message
	}
	if r.k.Done() {
		r.once.Do(func() { close(r.done) })
	}
}

// wait returns when every message arrived, or reports what is missing once the feeder is
// done and nothing new has come for idleLimit, counted from the later of the last new
// message and the moment the parent said "fed" (a sink that waited through a reconnect's
// hold gets its idleLimit after the cut, as the parent's waitChecker does).
func (r *receiver) wait(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var lastUnique uint64
	lastChange := time.Now()
	fed := false
	for {
		select {
		case <-r.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		counts, _ := r.k.Counts()
		if counts.Unique != lastUnique {
			lastUnique, lastChange = counts.Unique, time.Now()
		}
		if !fed && r.fed.Load() {
			fed = true
			lastChange = time.Now() // nothing older than "fed" counts as idle
		}
		if fed && time.Since(lastChange) > idleLimit {
			return fmt.Errorf("nothing new for %v: %d of %d received", idleLimit, counts.Unique, counts.Expected)
		}
	}
}

// setupLatency adds a second client of the same library that subscribes; the first one
// publishes one message at a time and waits for its delivery before the next.
func (c *child) setupLatency(ctx context.Context, f *stamp.Format, pub adapters.Client, w *workload) (*workload, error) {
	j := c.job
	sub, err := c.connect(ctx, "-sub")
	if err != nil {
		w.close()
		return nil, err
	}
	w.close = func() { disconnect(pub); disconnect(sub) }
	k := stamp.NewChecker(f, j.N)
	w.checker = k
	w.lat = make([]int64, 0, j.N)
	got := make(chan struct{}, 1)
	var latMu sync.Mutex
	h := func(p []byte) {
		now := time.Now().UnixNano()
		if ts := k.Check(p); ts > 1 {
			latMu.Lock()
			w.lat = append(w.lat, now-ts)
			latMu.Unlock()
		}
		select {
		case got <- struct{}{}:
		default:
		}
	}
	if err := sub.Subscribe(ctx, j.QoS, adapters.Callback, h); err != nil {
		w.close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	w.work = func(ctx context.Context, src *payloads) error {
		buf := src.New()
		for i := range j.N {
			src.Stamp(buf, i)
			if err := pub.Publish(ctx, j.QoS, buf); err != nil {
				return fmt.Errorf("message %d: %w", i, err)
			}
			select {
			case <-got:
			case <-time.After(idleLimit):
				return fmt.Errorf("message %d not delivered within %v", i, idleLimit)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	return w, nil
}

// enqueueConcurrent stores messages 0 to n-1 with workers goroutines, so a queue that
// commits many writers with one sync can show it.
func enqueueConcurrent(ctx context.Context, q adapters.Enqueuer, n, workers int, src *payloads) error {
	return adapters.Concurrently(n, workers, src, func(i int, buf []byte) error {
		if err := q.Enqueue(ctx, buf); err != nil {
			return fmt.Errorf("enqueue %d: %w", i, err)
		}
		return nil
	})
}
