package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/cmd/tern/internal/broker"
	"github.com/ternmq/tern/packet"
)

// benchFlags are the options of tern bench.
type benchFlags struct {
	workload    string
	conn        connFlags
	clients     int
	subs        int
	count       int
	duration    time.Duration
	rate        float64
	qos         int
	size        int
	retain      bool
	topic       string
	filter      string
	shared      string
	inflight    int
	coalesce    time.Duration // --read-coalescing
	connectRate float64
	wait        time.Duration
	interval    time.Duration
	jsonFile    string
	plotFile    string
	cpuProfile  string   // hidden: pprof CPU profile of the run, for tuning the bench itself
	args        []string // as given, for the report's conditions
	countGiven  bool
}

const benchSynopsis = "pub|sub|pubsub|conn [flags]\n       tern bench merge [--json FILE] [--plot FILE] REPORT.json..."

const benchDescription = `Loads an MQTT broker and measures it, checking that every message arrives exactly once.

Workloads:
  pub     publishers only (-c of them)
  sub     subscribers only (--subs of them), fed by another tern bench or your own system
  pubsub  both in this process: end-to-end latency, loss, duplicates and reordering
  conn    a connection storm: -c connections at --connect-rate, time to CONNACK, how many
          stay up, and the memory each costs this process, measured at the end of
          --duration (idle connections give back their write buffers after 1 s: -d 2s)

Every payload carries the run id, the client index, a sequence number and the time it was
due. With --rate the load is an open loop: message k of a client is due at start + k/rate,
and latency is measured from that time, so a stalled broker shows as latency instead of
slowing the sender down (coordinated omission). --rate 0 is a closed loop: as fast as the
--inflight window allows, latency from the actual send time.

Without a broker (--url, -h, -p, $TERN_BROKER) the embedded broker is started on loopback.
One status line a second goes to stderr; Ctrl-C ends the run and still prints the report
(acknowledgements and messages in flight are waited for --wait at most; a second Ctrl-C kills).
Each connection takes a file descriptor: for -c 10000 raise the limit first (ulimit -n 11000).

Exit status: 0 success; 1 a runtime failure, a lost message at QoS 1 or 2, or a duplicate
at QoS 2 (loss at QoS 0 is reported, not a failure); 2 a usage error.`

func newBenchFlags(workload string, stderr io.Writer) (*cliFlags, *benchFlags) {
	f := &benchFlags{workload: workload}
	c := newCLIFlags("bench", benchSynopsis, benchDescription, stderr)
	c.Int(&f.clients, "c,clients", "N", 1, "publishers (pub, pubsub) or connections (conn)")
	c.Int(&f.subs, "subs", "N", 1, "subscribers (sub, pubsub)")
	c.Int(&f.count, "n,count", "N", 1000, "messages per publisher (sub: stop after N messages per subscriber, or per --shared group)")
	c.Duration(&f.duration, "d,duration", "DURATION", 0, "publish for this long instead of -n messages (conn: hold the connections this long)")
	c.fs.Float64Var(&f.rate, "rate", 0, "")
	c.add("rate", "PER_SECOND", "", "messages a second per publisher, open loop (0: closed loop, as fast as the window allows)")
	c.Int(&f.qos, "q,qos", "QOS", 0, "quality of service of publishes and subscriptions: 0, 1 or 2")
	c.Int(&f.size, "s,size", "BYTES", 64, fmt.Sprintf("payload size, at least the %d-byte stamp", stampSize))
	c.Bool(&f.retain, "r,retain", "publish retained messages")
	c.String(&f.topic, "t,topic", "TEMPLATE", "tern/bench/%i", "topic template: %i is the client index, %n the sequence number")
	c.String(&f.filter, "filter", "FILTER", "", "subscribers' topic filter (default: the template with each level holding % as +)")
	c.String(&f.shared, "shared", "GROUP", "", "subscribers share the subscription $share/GROUP/FILTER: together they get each message once")
	c.Int(&f.inflight, "inflight", "N", 16, "QoS 1/2 publishes each publisher keeps unacknowledged (PublishAsync window)")
	c.Duration(&f.coalesce, "read-coalescing", "DURATION", tern.DefaultReadCoalescing,
		"under a fast stream each client's read loop wakes once per batch, waiting at most this long (0: every packet as it arrives)")
	c.fs.Float64Var(&f.connectRate, "connect-rate", 0, "")
	c.add("connect-rate", "PER_SECOND", "", "new connections a second (0: as fast as 64 parallel dials go)")
	c.Duration(&f.wait, "wait", "DURATION", 5*time.Second, "after publishing, wait this long without progress for messages in flight (sub: end after this long quiet)")
	c.Duration(&f.interval, "interval", "DURATION", time.Second, "status line interval")
	c.String(&f.jsonFile, "json", "FILE", "", "write the full report, with conditions and encoded HDR histograms, to FILE")
	c.String(&f.plotFile, "plot", "FILE", "", "plot throughput over time and the latency percentile curve to FILE (.svg or .png)")
	addConnFlagsFor(c, &f.conn, false)
	c.setUsage("L", "broker: mqtt://, mqtts://, tcp://, tls://, ws://, wss://, unix:// URL or bare host:port (default $TERN_BROKER, else the embedded broker on loopback)")
	c.setUsage("i", "client id prefix: clients are PREFIX-RUN-p0, -s0, -c0 ... (default tern-bench)")
	// Not in the usage listing: a tool for working on tern bench, not for using it.
	c.fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to FILE")
	return c, f
}

func runBenchCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-help") {
			c, _ := newBenchFlags("", stdout)
			c.fs.Usage()
			return 0
		}
		fmt.Fprintf(stderr, "tern bench: name a workload: pub, sub, pubsub, conn or merge (see tern help bench)\n")
		return 2
	}
	workload, rest := args[0], args[1:]
	if workload == "merge" {
		return runBenchMerge(rest, stdout, stderr)
	}
	switch workload {
	case "pub", "sub", "pubsub", "conn":
	default:
		fmt.Fprintf(stderr, "tern bench: unknown workload %q: want pub, sub, pubsub, conn or merge\n", workload)
		return 2
	}
	c, f := newBenchFlags(workload, stderr)
	if st := c.parse(rest); st >= 0 {
		return st
	}
	f.args = args
	f.countGiven = c.set("n,count")
	if err := f.check(c); err != nil {
		return exitStatus(stderr, "bench", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.cpuProfile != "" {
		end, err := startCPUProfile(f.cpuProfile)
		if err != nil {
			return exitStatus(stderr, "bench", fmt.Errorf("--cpuprofile: %w", err))
		}
		defer end()
	}
	rep, err := runBench(ctx, stop, f, stderr)
	if rep != nil {
		rep.printTable(stdout)
		if f.jsonFile != "" {
			if jerr := rep.writeJSON(f.jsonFile); jerr != nil && err == nil {
				err = fmt.Errorf("--json: %w", jerr)
			}
		}
		if f.plotFile != "" {
			if perr := plotReport(rep, f.plotFile); perr != nil && err == nil {
				err = fmt.Errorf("--plot: %w", perr)
			}
		}
		if err == nil {
			err = rep.verdict()
		}
	}
	return exitStatus(stderr, "bench", err)
}

// startCPUProfile profiles the process into path until the returned function is called.
func startCPUProfile(path string) (func(), error) {
	file, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(file); err != nil {
		file.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); file.Close() }, nil
}

// check validates the flags together; every mistake is a usage error.
func (f *benchFlags) check(c *cliFlags) error {
	switch {
	case f.clients <= 0 && f.workload != "sub":
		return usagef("-c %d: want at least 1 client", f.clients)
	case f.subs <= 0 && (f.workload == "sub" || f.workload == "pubsub"):
		return usagef("--subs %d: want at least 1 subscriber", f.subs)
	case f.count <= 0:
		return usagef("-n %d: want at least 1 message", f.count)
	case f.duration < 0:
		return usagef("--duration %v: want a positive duration", f.duration)
	case f.duration > 0 && f.countGiven && f.workload != "sub":
		return usagef("give -n or --duration, not both")
	case f.rate < 0 || math.IsNaN(f.rate) || math.IsInf(f.rate, 0):
		return usagef("--rate %g: want messages a second, 0 for a closed loop", f.rate)
	case f.rate > 0 && f.duration == 0 && !f.countGiven:
		return usagef("--rate needs --duration (or -n): an open loop runs for a set time")
	case f.rate > 1e7:
		return usagef("--rate %g: at most 10,000,000 a second per publisher", f.rate)
	case f.rate > 0 && f.rate < minRate:
		return usagef("--rate %g: at least %g a second (one message per %g s), 0 for a closed loop", f.rate, minRate, 1/minRate)
	case f.rate > 0 && f.countGiven && float64(f.count)/f.rate > maxRunSeconds:
		return usagef("--rate %g with -n %d: the run would last more than %g years", f.rate, f.count, maxRunSeconds/(365*24*3600))
	case f.connectRate < 0 || math.IsNaN(f.connectRate) || math.IsInf(f.connectRate, 0):
		return usagef("--connect-rate %g: want connections a second, 0 for no limit", f.connectRate)
	case f.connectRate > 0 && (f.connectRate < minRate || f.connectRate > 1e6):
		return usagef("--connect-rate %g: want %g to 1,000,000 connections a second, 0 for no limit", f.connectRate, minRate)
	case f.qos < 0 || f.qos > 2:
		return usagef("-q %d: want 0, 1 or 2", f.qos)
	case f.size < stampSize || f.size > 16<<20:
		return usagef("--size %d: want %d bytes (the stamp) to 16 MiB", f.size, stampSize)
	case f.inflight < 1 || f.inflight > math.MaxUint16:
		return usagef("--inflight %d: want 1 to 65535", f.inflight)
	case f.wait < 0:
		return usagef("--wait %v: want a positive duration", f.wait)
	case f.coalesce < 0 || f.coalesce > time.Second:
		return usagef("--read-coalescing %v: want 0 (off) to 1s", f.coalesce)
	case f.interval < minInterval:
		return usagef("--interval %v: at least %v (one status line each)", f.interval, minInterval)
	case f.clients > 1_000_000 || f.subs > 1_000_000:
		return usagef("at most 1,000,000 clients and 1,000,000 subscribers")
	}
	if f.plotFile != "" {
		if _, err := plotFormat(f.plotFile); err != nil {
			return usagef("--plot %s: %v", f.plotFile, err)
		}
	}
	if f.conn.id != "" && strings.ContainsAny(f.conn.id, "#+/") {
		return usagef("-i %q: a client id prefix without #, + or /", f.conn.id)
	}
	probe := strings.NewReplacer("%i", "0", "%n", "0").Replace(f.topic)
	if err := packet.ValidateTopicName(probe); err != nil {
		return usagef("-t %q: %v", f.topic, err)
	}
	if f.filter == "" {
		f.filter = filterOf(f.topic)
	}
	if err := packet.ValidateTopicFilter(f.filter); err != nil {
		return usagef("--filter %q: %v", f.filter, err)
	}
	if f.shared != "" {
		if strings.ContainsAny(f.shared, "/#+") {
			return usagef("--shared %q: a group name without /, # or +", f.shared)
		}
		f.filter = "$share/" + f.shared + "/" + f.filter
	}
	return nil
}

// minInterval bounds --interval from below: a status line every 10 ms is already more than
// anyone reads.
const minInterval = 10 * time.Millisecond

// Bounds of --rate and --connect-rate, so every interval and due time fits a
// time.Duration: at least one message or connection per 1000 s, and an open-loop -n run
// of at most 100 years.
const (
	minRate       = 0.001
	maxRunSeconds = 100 * 365 * 24 * 3600.0
)

// filterOf turns a topic template into the filter that matches every topic it makes: each
// level holding a % becomes +.
func filterOf(tmpl string) string {
	levels := strings.Split(tmpl, "/")
	for i, l := range levels {
		if strings.Contains(l, "%") {
			levels[i] = "+"
		}
	}
	return strings.Join(levels, "/")
}

// runBench runs the workload and returns its report; the error is what ended the run early
// (the report may still hold what was measured). stop releases the signal handler, so a
// second Ctrl-C while the run drains ends the process.
func runBench(ctx context.Context, stop func(), f *benchFlags, stderr io.Writer) (*benchReport, error) {
	need := uint64(f.clients + f.subs + 64)
	if f.workload == "sub" {
		need = uint64(f.subs + 64)
	}
	limit, err := checkFDLimit(need)
	if err != nil {
		return nil, err
	}
	var embedded *broker.Broker
	// -p alone names a broker on localhost, as in pub and sub.
	if f.conn.url == "" && f.conn.host == "" && f.conn.port == 0 && os.Getenv("TERN_BROKER") == "" {
		if f.conn.cafile != "" || f.conn.cert != "" || f.conn.key != "" || f.conn.insecure {
			return nil, usagef("TLS flags need a broker (-L, -h or -p): the embedded broker speaks plain TCP")
		}
		embedded, err = broker.Start("127.0.0.1:0", broker.Options{})
		if err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
		defer embedded.Close()
		f.conn.url = embedded.URL()
		fmt.Fprintf(stderr, "tern bench: no broker given; using the embedded one at %s\n", f.conn.url)
	}
	r, err := newRun(f, stderr)
	if err != nil {
		return nil, err
	}
	r.cond.FDLimit = limit
	return r.run(ctx, stop)
}

func runBenchMerge(args []string, stdout, stderr io.Writer) int {
	c := newCLIFlags("bench merge", "[--json FILE] [--plot FILE] REPORT.json...",
		"Combines reports of runs made at the same time from several machines into one: counts and\nrates add up, and the HDR histograms are added before percentiles are taken.", stderr)
	var jsonFile, plotFile string
	c.String(&jsonFile, "json", "FILE", "", "write the merged report to FILE")
	c.String(&plotFile, "plot", "FILE", "", "plot the merged report to FILE (.svg or .png)")
	c.fs.SetOutput(io.Discard)
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.fs.SetOutput(stderr)
			c.fs.Usage()
			return 0
		}
		fmt.Fprintf(stderr, "tern bench merge: %v\n", err)
		return 2
	}
	if c.fs.NArg() == 0 {
		fmt.Fprintln(stderr, "tern bench merge: name the reports to merge (files written by --json)")
		return 2
	}
	if plotFile != "" {
		if _, err := plotFormat(plotFile); err != nil {
			fmt.Fprintf(stderr, "tern bench merge: --plot %s: %v\n", plotFile, err)
			return 2
		}
	}
	var in []*benchReport
	for _, p := range c.fs.Args() {
		r, err := readReport(p)
		if err != nil {
			fmt.Fprintf(stderr, "tern bench merge: %v\n", err)
			return 1
		}
		in = append(in, r)
	}
	out, err := mergeReports(in)
	if err != nil {
		fmt.Fprintf(stderr, "tern bench merge: %v\n", err)
		return 1
	}
	out.printTable(stdout)
	if jsonFile != "" {
		if err := out.writeJSON(jsonFile); err != nil {
			fmt.Fprintf(stderr, "tern bench merge: --json: %v\n", err)
			return 1
		}
	}
	if plotFile != "" {
		if err := plotReport(out, plotFile); err != nil {
			fmt.Fprintf(stderr, "tern bench merge: --plot: %v\n", err)
			return 1
		}
	}
	return 0
}

// verdict is the run's outcome as an error: a broken delivery guarantee fails the run.
func (r *benchReport) verdict() error {
	q := r.Conditions.QoS
	switch {
	case r.Lost > 0 && q >= 1:
		return fmt.Errorf("%d messages lost at QoS %d", r.Lost, q)
	case r.Duplicates > 0 && q == 2:
		return fmt.Errorf("%d duplicates at QoS 2", r.Duplicates)
	case r.Workload == "conn" && r.ConnsFailed > 0:
		return fmt.Errorf("%d of %d connections failed", r.ConnsFailed, r.ConnsFailed+r.ConnsUp)
	}
	return nil
}
