package filequeue

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog/faultfs"
	"github.com/ternmq/tern/internal/seglog/segtest"
)

// layout maps each segment file to the entries in it, in order.
type layout struct {
	files   []string
	entries [][]segtest.Record
	seqs    [][]uint64
}

func readLayout(t *testing.T, dir string) layout {
	t.Helper()
	var l layout
	l.files, _ = filepath.Glob(filepath.Join(dir, "*.seg"))
	slices.Sort(l.files)
	for _, f := range l.files {
		var es []segtest.Record
		var seqs []uint64
		for _, r := range segtest.ParseRecords(segtest.ReadFile(t, f)) {
			if r.Type == typeEntry {
				seq, _, _ := entryHead(r.Payload)
				es = append(es, r)
				seqs = append(seqs, seq)
			}
		}
		l.entries = append(l.entries, es)
		l.seqs = append(l.seqs, seqs)
	}
	return l
}

// openWithin opens the queue in a goroutine and fails if Open does not return in time:
// damaged data must never make it spin.
func openWithin(t *testing.T, dir string, opts ...Option) (*Queue, []Corruption) {
	t.Helper()
	var mu sync.Mutex
	var reports []Corruption
	opts = append(opts, WithCorruptionHandler(func(c Corruption) {
		mu.Lock()
		reports = append(reports, c)
		mu.Unlock()
	}))
	type result struct {
		q   *Queue
		err error
	}
	done := make(chan result, 1)
	go func() {
		q, err := Open(dir, opts...)
		done <- result{q, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Open: %v", r.err)
		}
		mu.Lock()
		defer mu.Unlock()
		return r.q, slices.Clone(reports)
	case <-time.After(20 * time.Second):
		t.Fatal("Open still running after 20s")
		return nil, nil
	}
}

func TestCorruption(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// damage harms dir and returns the sequence numbers it destroyed.
		damage func(t *testing.T, l layout) []uint64
	}{
		{"truncated last record", func(t *testing.T, l layout) []uint64 {
			last := len(l.files) - 1
			es := l.entries[last]
			os.Truncate(l.files[last], es[len(es)-1].Off+12)
			return l.seqs[last][len(es)-1:]
		}},
		{"flipped bits mid-file", func(t *testing.T, l layout) []uint64 {
			f := l.files[1]
			b := segtest.ReadFile(t, f)
			e := l.entries[1][3]
			b[e.Off+30] ^= 0x5A
			b[e.Off+31] ^= 0x01
			os.WriteFile(f, b, 0o644)
			return l.seqs[1][3:4]
		}},
		{"flipped length mid-file", func(t *testing.T, l layout) []uint64 {
			f := l.files[2]
			b := segtest.ReadFile(t, f)
			e := l.entries[2][1]
			b[e.Off+2] ^= 0x40 // a length far past the end
			os.WriteFile(f, b, 0o644)
			return l.seqs[2][1:2]
		}},
		{"zero-length segment", func(t *testing.T, l layout) []uint64 {
			os.Truncate(l.files[2], 0)
			return l.seqs[2]
		}},
		{"missing segment", func(t *testing.T, l layout) []uint64 {
			os.Remove(l.files[1])
			return l.seqs[1]
		}},
		{"garbage appended", func(t *testing.T, l layout) []uint64 {
			f, _ := os.OpenFile(l.files[len(l.files)-1], os.O_WRONLY|os.O_APPEND, 0)
			f.Write([]byte("\x07\x00\x00\x00not a record at all, just noise"))
			f.Close()
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			q := mustOpen(t, dir, WithSegmentSize(1<<10))
			seqs := enqueueN(t, q, 120)
			q.Close()
			l := readLayout(t, dir)
			if len(l.files) < 4 {
				t.Fatalf("only %d segments", len(l.files))
			}
			lost := tt.damage(t, l)
			q, reports := openWithin(t, dir, WithSegmentSize(1<<10))
			defer q.Close()
			if len(reports) == 0 {
				t.Fatal("the damage was not reported")
			}
			for _, r := range reports {
				t.Logf("reported: %v", r)
			}
			want := slices.DeleteFunc(slices.Clone(seqs), func(s uint64) bool { return slices.Contains(lost, s) })
			if got := seqsOf(readAll(t, q)); !slices.Equal(got, want) {
				t.Fatalf("after damage: %d entries %v\nwant %d %v", len(got), got, len(want), want)
			}
			// The queue goes on: new entries, numbered above everything seen.
			e := tern.QueueEntry{Message: msg(1)}
			if err := q.Enqueue(ctx, &e); err != nil || e.Seq <= want[len(want)-1] {
				t.Fatalf("Enqueue after damage: %d, %v", e.Seq, err)
			}
		})
	}
}

func TestInjectedFailures(t *testing.T) {
	t.Parallel()
	for _, op := range []faultfs.Op{faultfs.OpWrite, faultfs.OpSync} {
		t.Run(op.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fsys := faultfs.New(OSFS())
			q := mustOpen(t, dir, WithFS(fsys))
			good := enqueueN(t, q, 10)
			boom := errors.New("injected I/O error")
			segtest.FailOn(fsys, op, boom)
			e := tern.QueueEntry{Message: msg(99)}
			if err := q.Enqueue(ctx, &e); !errors.Is(err, boom) {
				t.Fatalf("Enqueue with a failing %v: %v", op, err)
			}
			fsys.SetFault(nil)
			// Failed for good until reopened, even with a healthy disk.
			if err := q.Enqueue(ctx, &tern.QueueEntry{Message: msg(100)}); err == nil {
				t.Fatal("Enqueue succeeded after a failure")
			}
			if got := seqsOf(readAll(t, q)); !slices.Equal(got, good) {
				t.Fatalf("Read after failure: %v, want %v", got, good)
			}
			q.Close()
			q = mustOpen(t, dir)
			defer q.Close()
			got := seqsOf(readAll(t, q))
			// The failed entry may or may not be there (an error says "maybe"); the good
			// ones must be.
			if len(got) < len(good) || !slices.Equal(got[:len(good)], good) || len(got) > len(good)+1 {
				t.Fatalf("after reopen: %v, want %v (+ maybe one)", got, good)
			}
		})
	}
}

// TestSimulatedPowerLoss drops everything not synced while producers run: every Enqueue
// that returned must survive.
func TestSimulatedPowerLoss(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fsys := faultfs.New(OSFS())
	q := mustOpen(t, dir, WithFS(fsys), WithSegmentSize(4<<10))
	survivorsNeeded := segtest.CrashDuring(t, fsys, 16, 300, func(p, i int) (uint64, error) {
		e := tern.QueueEntry{Message: msg(p*1000 + i)}
		err := q.Enqueue(ctx, &e)
		return e.Seq, err
	})
	q.Close()
	q = mustOpen(t, dir)
	defer q.Close()
	got := map[uint64]bool{}
	for _, s := range seqsOf(readAll(t, q)) {
		got[s] = true
	}
	for _, s := range survivorsNeeded {
		if !got[s] {
			t.Fatalf("entry %d: Enqueue returned, but it is gone after the crash", s)
		}
	}
}

// TestHelperChild is the process the kill -9 test kills. It enqueues from four goroutines,
// printing "e G SEQ" after each Enqueue returned; after an Enqueue that got a multiple of
// three it acknowledges the entry before, printing "a G SEQ" after the Ack returned. It runs
// until killed.
func TestHelperChild(t *testing.T) {
	dir := segtest.ChildDir()
	if dir == "" {
		t.Skip("only runs as the child of TestKill9")
	}
	q, err := Open(dir, WithSegmentSize(8<<10))
	if err != nil {
		fmt.Println("open error:", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	emit := func(kind string, g int, seq uint64) {
		mu.Lock()
		fmt.Fprintf(out, "%s %d %d\n", kind, g, seq)
		out.Flush() // one write per line: what is printed was done
		mu.Unlock()
	}
	for g := range 4 {
		go func() {
			for i := 0; ; i++ {
				e := tern.QueueEntry{Message: msg(g*1_000_000 + i)}
				if err := q.Enqueue(ctx, &e); err != nil {
					fmt.Println("enqueue error:", err)
					os.Exit(3)
				}
				emit("e", g, e.Seq)
				if e.Seq%3 == 0 {
					if err := q.Ack(e.Seq - 1); err != nil {
						fmt.Println("ack error:", err)
						os.Exit(3)
					}
					emit("a", g, e.Seq-1)
				}
			}
		}()
	}
	select {} // until SIGKILL
}

// TestKill9 kills a child process at random moments while it enqueues, then checks that
// every entry it reported enqueued is there (unless reported acknowledged) and that
// sequence numbers keep increasing across restarts.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test skipped in -short mode")
	}
	// Not parallel: while os/exec forks, the child holds a copy of every descriptor of
	// this process until it execs, LOCK files of other tests' queues included, so their
	// reopen could briefly see the directory locked.
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	enqueued := map[uint64]bool{}
	acked := map[uint64]bool{}
	var maxSeen uint64
	deadline := time.Now().Add(2 * time.Minute)
	for round := range 6 {
		if time.Now().After(deadline) {
			t.Fatalf("out of time after %d rounds", round)
		}
		lines := runAndKill(t, dir, 30+rng.IntN(300))
		var firstOfRun uint64
		lastLine := map[int]string{}
		for _, ln := range lines {
			var kind string
			var g int
			var seq uint64
			if _, err := fmt.Sscanf(ln, "%s %d %d", &kind, &g, &seq); err != nil {
				t.Fatalf("child said %q", ln)
			}
			switch kind {
			case "e":
				enqueued[seq] = true
				if firstOfRun == 0 || seq < firstOfRun {
					firstOfRun = seq
				}
			case "a":
				acked[seq] = true
			}
			lastLine[g] = ln
		}
		// A goroutine whose last line is an Enqueue of a multiple of three may have acked
		// the entry before it without saying so.
		mayBeAcked := map[uint64]bool{}
		for _, ln := range lastLine {
			var g int
			var seq uint64
			if _, err := fmt.Sscanf(ln, "e %d %d", &g, &seq); err == nil && seq%3 == 0 {
				mayBeAcked[seq-1] = true
			}
		}
		if firstOfRun != 0 && firstOfRun <= maxSeen {
			t.Fatalf("round %d: sequence number %d reused (had seen %d)", round, firstOfRun, maxSeen)
		}
		q := mustOpen(t, dir, WithSegmentSize(8<<10))
		present := map[uint64]bool{}
		for _, s := range seqsOf(readAll(t, q)) {
			present[s] = true
			maxSeen = max(maxSeen, s)
		}
		q.Close()
		for s := range enqueued {
			maxSeen = max(maxSeen, s)
			switch {
			case acked[s] && present[s]:
				t.Fatalf("round %d: entry %d was acknowledged, yet came back", round, s)
			case !acked[s] && !present[s] && !mayBeAcked[s]:
				t.Fatalf("round %d: entry %d was enqueued, and is gone", round, s)
			case !present[s]:
				acked[s] = true // gone for good: an unreported ack
			}
		}
		t.Logf("round %d: %d lines from the child, %d entries stored", round, len(lines), len(present))
	}
}

// runAndKill starts the child, SIGKILLs it after it printed n lines, and returns every line
// it printed; a line other than "e ..." or "a ..." is the child's error.
func runAndKill(t *testing.T, dir string, n int) []string {
	t.Helper()
	return segtest.KillChild(t, dir, nil, n, func(ln string) bool {
		return strings.HasPrefix(ln, "e ") || strings.HasPrefix(ln, "a ")
	})
}
