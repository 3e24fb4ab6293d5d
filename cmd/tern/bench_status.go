package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// status prints one line per interval while a run goes: messages out and in per second,
// the p99 latency so far, connections up and errors. On a terminal the line is rewritten in
// place; otherwise (piped, a file) each interval gets a line of its own. It also keeps the
// per-interval counts for the report's series.
type status struct {
	r        *run
	w        io.Writer
	interval time.Duration
	tty      bool

	once    sync.Once
	quit    chan struct{}
	done    chan struct{}
	begin   time.Time
	series  []seriesPoint
	started bool
}

func newStatus(r *run, w io.Writer, interval time.Duration) *status {
	s := &status{r: r, w: w, interval: interval, quit: make(chan struct{}), done: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			s.tty = true
		}
	}
	return s
}

// start starts the ticker goroutine; later calls do nothing.
func (s *status) start() {
	s.once.Do(func() {
		s.started = true
		s.begin = time.Now()
		go s.loop()
	})
}

// stop ends the ticker goroutine, records the last partial interval and returns the series.
func (s *status) stop() []seriesPoint {
	if !s.started {
		return nil
	}
	close(s.quit)
	<-s.done
	return s.series
}

func (s *status) loop() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	var lastOut, lastIn uint64
	last := s.begin
	sample := func(now time.Time, final bool) {
		// out can step back when the broker refuses a QoS 1/2 publish counted as sent.
		out, in := max(s.r.out.Load(), lastOut), s.r.in.Load()
		s.series = append(s.series, seriesPoint{T: now.Sub(s.begin).Seconds(), Out: out - lastOut, In: in - lastIn})
		secs := now.Sub(last).Seconds()
		if secs <= 0 {
			secs = 1
		}
		line := fmt.Sprintf("%6.1fs  out %8.0f/s  in %8.0f/s  p99 %s  conns %d  errors %d",
			now.Sub(s.begin).Seconds(), float64(out-lastOut)/secs, float64(in-lastIn)/secs,
			s.p99(), s.r.connsUp.Load(), s.r.pubErrs.Load()+s.r.connErrs.Load())
		switch {
		case s.tty && final:
			fmt.Fprintf(s.w, "\r%-79s\n", line)
		case s.tty:
			fmt.Fprintf(s.w, "\r%-79s", line)
		default:
			fmt.Fprintln(s.w, line)
		}
		lastOut, lastIn, last = out, in, now
	}
	for {
		select {
		case now := <-t.C:
			sample(now, false)
		case <-s.quit:
			sample(time.Now(), true)
			return
		}
	}
}

// p99 is the end-to-end p99 so far, else the publish-to-ack or connect one.
func (s *status) p99() string {
	for _, l := range []*latency{s.r.e2e, s.r.ack, s.r.connect} {
		if h := l.merged(); h.TotalCount() > 0 {
			return fmtMicros(h.ValueAtQuantile(99))
		}
	}
	return "-"
}

func fmtMicros(us int64) string {
	return (time.Duration(us) * time.Microsecond).String()
}
