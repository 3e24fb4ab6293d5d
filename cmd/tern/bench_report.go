package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 10 minutes, with 3 significant
// digits: about 200 KiB per histogram, so the bench keeps a few shards, not one per client.
const (
	histMaxMicros = int64(10 * time.Minute / time.Microsecond)
	histShards    = 4
)

// latency is a sharded HDR histogram; record is safe for concurrent use.
type latency struct {
	shards [histShards]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
	}
}

func newLatency() *latency {
	l := &latency{}
	for i := range l.shards {
		l.shards[i].h = newHist()
	}
	return l
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMaxMicros, 3) }

// record adds d to shard i%histShards; values beyond the range count as the maximum.
func (l *latency) record(i int, d time.Duration) {
	us := min(max(d.Microseconds(), 1), histMaxMicros)
	s := &l.shards[i%histShards]
	s.mu.Lock()
	s.h.RecordValue(us) // cannot fail: us is within the range
	s.mu.Unlock()
}

// merged returns a copy of all shards together.
func (l *latency) merged() *hdrhistogram.Histogram {
	out := newHist()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		out.Merge(s.h)
		s.mu.Unlock()
	}
	return out
}

// latStats are the percentiles of a histogram, in milliseconds.
type latStats struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func statsOf(h *hdrhistogram.Histogram) *latStats {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return &latStats{Count: h.TotalCount(), Mean: h.Mean() / 1000,
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)), P99: ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max())}
}

// conditions say where and how a report was measured.
type conditions struct {
	Tern     string    `json:"tern"`
	Go       string    `json:"go"`
	OS       string    `json:"os"`
	Arch     string    `json:"arch"`
	CPUs     int       `json:"cpus"`
	Host     string    `json:"host"`
	Broker   string    `json:"broker"`
	Started  time.Time `json:"started"`
	Args     []string  `json:"args"`
	Clients  int       `json:"clients"`
	Subs     int       `json:"subscribers"`
	QoS      int       `json:"qos"`
	Size     int       `json:"size"`
	Rate     float64   `json:"rate_per_client"`
	OpenLoop bool      `json:"open_loop"`
	Inflight int       `json:"inflight"`
	// ReadCoalescing is --read-coalescing ("0s": off); empty in reports from before it.
	ReadCoalescing string `json:"read_coalescing,omitempty"`
	Retain         bool   `json:"retain"`
	Topic          string `json:"topic"`
	Shared         string `json:"shared,omitempty"`
	RunID          uint64 `json:"run_id"`
	FDLimit        uint64 `json:"fd_limit,omitempty"`
	GOMAXPROC      int    `json:"gomaxprocs"`
}

// seriesPoint is one status interval: messages sent and received during it.
type seriesPoint struct {
	T   float64 `json:"t_s"` // seconds since the start, at the end of the interval
	Out uint64  `json:"out"`
	In  uint64  `json:"in"`
}

// benchReport is every figure of a run (or of merged runs); --json writes it as is.
type benchReport struct {
	Workload    string       `json:"workload"`
	Conditions  conditions   `json:"conditions"`
	Sources     []conditions `json:"sources,omitempty"` // set by merge: one per input report
	Interrupted bool         `json:"interrupted,omitempty"`
	Duration    float64      `json:"duration_s"`          // publishing time (pub, pubsub), run time otherwise
	ReceiveTime float64      `json:"receive_s,omitempty"` // from the start (sub: the first message) to the last message received

	Sent          uint64  `json:"sent"`
	PublishErrors uint64  `json:"publish_errors"`
	Acked         uint64  `json:"acked"`
	Unacked       uint64  `json:"unacknowledged,omitempty"` // given up on: Ctrl-C or the --duration deadline, then --wait
	Received      uint64  `json:"received"`
	Expected      uint64  `json:"expected,omitempty"`
	Lost          uint64  `json:"lost"`
	Duplicates    uint64  `json:"duplicates"`
	Reordered     uint64  `json:"reordered"`
	Foreign       uint64  `json:"foreign,omitempty"`
	OutRate       float64 `json:"out_per_s"`
	InRate        float64 `json:"in_per_s"`

	Latency    *latStats `json:"latency,omitempty"`     // end to end, from the due time
	AckLatency *latStats `json:"ack_latency,omitempty"` // due time to PUBACK/PUBCOMP
	Connect    *latStats `json:"connect,omitempty"`     // dial to CONNACK

	ConnsUp          int     `json:"connections_up"`
	ConnsFailed      int     `json:"connections_failed"`
	ConnErrors       uint64  `json:"connection_errors"` // connections lost or failed during the run
	HeapPerConn      float64 `json:"heap_bytes_per_connection,omitempty"`
	GoroutinesPerCon float64 `json:"goroutines_per_connection,omitempty"`

	// Publishers lists the publishers with a loss, a duplicate or a reordering, as seen by
	// each receiving side (at most maxListed).
	Publishers []pubLoss     `json:"publishers,omitempty"`
	Series     []seriesPoint `json:"series,omitempty"`
	// Histograms are HDR histograms in microseconds, in the encoded form (compressed V2,
	// base64) that HdrHistogram's tools in every language read: "latency", "ack", "connect".
	Histograms map[string]string `json:"histograms,omitempty"`
}

const maxListed = 100

// setHist stores h under name in its encoded form and returns its statistics.
func (r *benchReport) setHist(name string, h *hdrhistogram.Histogram) *latStats {
	st := statsOf(h)
	if st == nil {
		return nil
	}
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err == nil {
		if r.Histograms == nil {
			r.Histograms = make(map[string]string)
		}
		r.Histograms[name] = string(b)
	}
	return st
}

// hist decodes the histogram stored under name; nil when absent.
func (r *benchReport) hist(name string) (*hdrhistogram.Histogram, error) {
	s, ok := r.Histograms[name]
	if !ok {
		return nil, nil
	}
	h, err := hdrhistogram.Decode([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("histogram %q: %w", name, err)
	}
	return h, nil
}

// writeJSON writes the report to path.
func (r *benchReport) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readReport(path string) (*benchReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := &benchReport{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Workload == "" {
		return nil, fmt.Errorf("%s: not a tern bench report", path)
	}
	return r, nil
}

// printTable writes the report as a table for people.
func (r *benchReport) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Conditions
	title := fmt.Sprintf("tern bench %s", r.Workload)
	if len(r.Sources) > 0 {
		title += fmt.Sprintf(" (merged from %d reports)", len(r.Sources))
	}
	if r.Interrupted {
		title += " (interrupted)"
	}
	fmt.Fprintln(tw, title)
	fmt.Fprintf(tw, "broker\t%s\n", c.Broker)
	if r.Workload != "conn" {
		loop := "closed loop"
		if c.OpenLoop {
			loop = fmt.Sprintf("open loop, %g msg/s per client", c.Rate)
		}
		fmt.Fprintf(tw, "load\t%d publishers, %d subscribers, QoS %d, %d B, %s, inflight %d",
			c.Clients, c.Subs, c.QoS, c.Size, loop, c.Inflight)
		if c.ReadCoalescing != "" {
			fmt.Fprintf(tw, ", read coalescing %s", c.ReadCoalescing)
		}
		fmt.Fprintln(tw)
		fmt.Fprintf(tw, "duration\t%.2f s\n", r.Duration)
		fmt.Fprintf(tw, "sent\t%d (%.0f msg/s), %d publish errors\n", r.Sent, r.OutRate, r.PublishErrors)
		if c.QoS > 0 {
			fmt.Fprintf(tw, "acknowledged\t%d", r.Acked)
			if r.Unacked > 0 {
				fmt.Fprintf(tw, ", %d not acknowledged when the run stopped waiting", r.Unacked)
			}
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "received\t%d (%.0f msg/s over %.2f s)\n", r.Received, r.InRate, r.ReceiveTime)
		fmt.Fprintf(tw, "lost\t%d\n", r.Lost)
		fmt.Fprintf(tw, "duplicates\t%d\n", r.Duplicates)
		fmt.Fprintf(tw, "reordered\t%d\n", r.Reordered)
		if r.Foreign > 0 {
			fmt.Fprintf(tw, "foreign\t%d (not bench payloads, or beyond the tracked range)\n", r.Foreign)
		}
	}
	fmt.Fprintf(tw, "connections\t%d up, %d failed, %d errors during the run\n", r.ConnsUp, r.ConnsFailed, r.ConnErrors)
	if r.HeapPerConn > 0 {
		fmt.Fprintf(tw, "per connection\t%.1f KiB heap, %.1f goroutines\n", r.HeapPerConn/1024, r.GoroutinesPerCon)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "latency (ms)\tcount\tp50\tp90\tp99\tp99.9\tmax")
	for _, l := range []struct {
		name string
		s    *latStats
	}{{"end to end", r.Latency}, {"publish to ack", r.AckLatency}, {"connect", r.Connect}} {
		if l.s == nil {
			continue
		}
		s := l.s
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\n", l.name, s.Count, s.P50, s.P90, s.P99, s.P999, s.Max)
	}
	for i, p := range r.Publishers {
		if i == 0 {
			fmt.Fprintln(tw)
			fmt.Fprintln(tw, "publisher\texpected\treceived\tlost\tduplicates\treordered")
		}
		fmt.Fprintf(tw, "%x/%d\t%d\t%d\t%d\t%d\t%d\n", p.Run, p.Client, p.Expected, p.Received, p.Lost, p.Duplicates, p.Reordered)
	}
	tw.Flush()
}

// mergeReports combines reports of runs made at the same time (from several hosts):
// counts and rates add up, histograms are added and their percentiles computed anew, and
// series add up interval by interval.
func mergeReports(in []*benchReport) (*benchReport, error) {
	if len(in) == 0 {
		return nil, errors.New("no report to merge")
	}
	out := &benchReport{Workload: in[0].Workload, Conditions: in[0].Conditions}
	hists := map[string]*hdrhistogram.Histogram{}
	for _, r := range in {
		if r.Workload != out.Workload {
			return nil, fmt.Errorf("cannot merge a %s report with a %s report", r.Workload, out.Workload)
		}
		if len(r.Sources) > 0 {
			out.Sources = append(out.Sources, r.Sources...)
		} else {
			out.Sources = append(out.Sources, r.Conditions)
		}
		out.Interrupted = out.Interrupted || r.Interrupted
		out.Duration = max(out.Duration, r.Duration)
		out.ReceiveTime = max(out.ReceiveTime, r.ReceiveTime)
		out.Sent += r.Sent
		out.PublishErrors += r.PublishErrors
		out.Acked += r.Acked
		out.Unacked += r.Unacked
		out.Received += r.Received
		out.Expected += r.Expected
		out.Lost += r.Lost
		out.Duplicates += r.Duplicates
		out.Reordered += r.Reordered
		out.Foreign += r.Foreign
		out.OutRate += r.OutRate
		out.InRate += r.InRate
		out.ConnsUp += r.ConnsUp
		out.ConnsFailed += r.ConnsFailed
		out.ConnErrors += r.ConnErrors
		for _, p := range r.Publishers {
			if len(out.Publishers) < maxListed {
				out.Publishers = append(out.Publishers, p)
			}
		}
		for i, p := range r.Series {
			if i == len(out.Series) {
				out.Series = append(out.Series, seriesPoint{T: p.T})
			}
			out.Series[i].Out += p.Out
			out.Series[i].In += p.In
		}
		for name := range r.Histograms {
			h, err := r.hist(name)
			if err != nil {
				return nil, err
			}
			if hists[name] == nil {
				hists[name] = newHist()
			}
			hists[name].Merge(h)
		}
	}
	// Per-connection cost is a per-process figure: the mean over the processes.
	var heap, gor float64
	var n int
	for _, r := range in {
		if r.HeapPerConn > 0 {
			heap += r.HeapPerConn
			gor += r.GoroutinesPerCon
			n++
		}
	}
	if n > 0 {
		out.HeapPerConn, out.GoroutinesPerCon = heap/float64(n), gor/float64(n)
	}
	out.Conditions.Clients, out.Conditions.Subs = 0, 0
	for _, c := range out.Sources {
		out.Conditions.Clients += c.Clients
		out.Conditions.Subs += c.Subs
	}
	out.Latency = out.setHist("latency", hists["latency"])
	out.AckLatency = out.setHist("ack", hists["ack"])
	out.Connect = out.setHist("connect", hists["connect"])
	return out, nil
}
