package filequeue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog/faultfs"
	"github.com/ternmq/tern/internal/seglog/segtest"
)

// Tests of the sequence high-water mark and of missing-segment detection: "a persisted
// monotonic sequence number per message, never reused, even after a torn or lost tail", and
// "a durable queue never loses entries unseen".

// lastSegment returns the newest segment file holding any byte.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	slices.Sort(files)
	for i := len(files) - 1; i >= 0; i-- {
		if st, err := os.Stat(files[i]); err == nil && st.Size() > 0 {
			return files[i]
		}
	}
	t.Fatal("no segment holds data")
	return ""
}

// cutTail damages the newest segment the ways a lost tail looks on disk.
var cutTail = []struct {
	name string
	cut  func(t *testing.T, dir string)
}{
	{"last segment deleted", func(t *testing.T, dir string) {
		if err := os.Remove(lastSegment(t, dir)); err != nil {
			t.Fatal(err)
		}
	}},
	{"last segment emptied", func(t *testing.T, dir string) {
		if err := os.Truncate(lastSegment(t, dir), 0); err != nil {
			t.Fatal(err)
		}
	}},
	{"last records cut at a boundary", func(t *testing.T, dir string) {
		f := lastSegment(t, dir)
		recs := segtest.ParseRecords(segtest.ReadFile(t, f))
		if err := os.Truncate(f, recs[len(recs)/2].Off); err != nil {
			t.Fatal(err)
		}
	}},
	{"torn tail", func(t *testing.T, dir string) {
		f := lastSegment(t, dir)
		recs := segtest.ParseRecords(segtest.ReadFile(t, f))
		if err := os.Truncate(f, recs[len(recs)/2].Off+5); err != nil {
			t.Fatal(err)
		}
	}},
}

// TestSeqNeverReusedAfterLostTail: after the newest entries are lost, by a crash or by a
// damaged or deleted file, numbering still goes on above every sequence number Enqueue
// ever returned. [promise: a sequence number is never reused, even after a lost tail]
func TestSeqNeverReusedAfterLostTail(t *testing.T) {
	t.Parallel()
	for _, crash := range []bool{false, true} {
		for _, tc := range cutTail {
			name := tc.name + "/closed"
			if crash {
				name = tc.name + "/crashed"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				fsys := faultfs.New(OSFS())
				q := mustOpen(t, dir, WithFS(fsys), WithSegmentSize(1<<10))
				seqs := enqueueN(t, q, 100)
				if crash {
					if err := fsys.Crash(); err != nil {
						t.Fatal(err)
					}
				}
				q.Close()
				tc.cut(t, dir)
				q, _ = openWithin(t, dir, WithSegmentSize(1<<10))
				defer q.Close()
				e := tern.QueueEntry{Message: msg(1)}
				if err := q.Enqueue(ctx, &e); err != nil {
					t.Fatal(err)
				}
				if top := slices.Max(seqs); e.Seq <= top {
					t.Fatalf("sequence number %d handed out again (had handed out up to %d)", e.Seq, top)
				}
			})
		}
	}
}

// TestSeqNeverReusedAfterKill9 kills a writing process, then loses the tail of what it
// wrote: the next sequence number is above everything the process reported enqueued.
// [promise: a sequence number is never reused, even after a lost tail]
func TestSeqNeverReusedAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test skipped in -short mode")
	}
	// Not parallel, like TestKill9: a fork holds copies of other tests' LOCK files.
	for _, tc := range cutTail {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var top uint64
			for _, ln := range runAndKill(t, dir, 200) {
				var kind string
				var g int
				var seq uint64
				if _, err := fmt.Sscanf(ln, "%s %d %d", &kind, &g, &seq); err != nil {
					t.Fatalf("child said %q", ln)
				}
				top = max(top, seq)
			}
			tc.cut(t, dir)
			q, _ := openWithin(t, dir, WithSegmentSize(8<<10))
			defer q.Close()
			e := tern.QueueEntry{Message: msg(1)}
			if err := q.Enqueue(ctx, &e); err != nil {
				t.Fatal(err)
			}
			if e.Seq <= top {
				t.Fatalf("sequence number %d handed out again (the killed process reached %d)", e.Seq, top)
			}
		})
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// ordOf returns the ordinal in a segment file's name.
func ordOf(t *testing.T, path string) uint64 {
	t.Helper()
	var ord uint64
	if _, err := fmt.Sscanf(filepath.Base(path), "%d.seg", &ord); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ord
}

// TestMissingSegmentsReported: a segment file missing at either end of the queue is
// reported at Open, with the sequence numbers it held, while segments deleted because
// every entry in them was acknowledged are not. [promise: a durable queue never loses
// entries unseen]
func TestMissingSegmentsReported(t *testing.T) {
	t.Parallel()
	const segSize = 1 << 10
	tests := []struct {
		name string
		// prepare acknowledges and damages; it returns the sequence numbers that must not
		// come back (acknowledged or lost), the ordinal of a segment it deleted without
		// acknowledging its entries (0 for none), and whether Open must report something.
		prepare func(t *testing.T, dir string, q *Queue, seqs []uint64) (gone []uint64, lostSeg uint64, report bool)
	}{
		{"first segment deleted", func(t *testing.T, dir string, q *Queue, seqs []uint64) ([]uint64, uint64, bool) {
			q.Close()
			l := readLayout(t, dir)
			mustRemove(t, l.files[0])
			return l.seqs[0], 1, true
		}},
		{"last segment deleted", func(t *testing.T, dir string, q *Queue, seqs []uint64) ([]uint64, uint64, bool) {
			q.Close()
			l := readLayout(t, dir)
			last := len(l.files) - 1
			mustRemove(t, l.files[last])
			return l.seqs[last], ordOf(t, l.files[last]), true
		}},
		{"first segments deleted after acknowledged ones went", func(t *testing.T, dir string, q *Queue, seqs []uint64) ([]uint64, uint64, bool) {
			for _, s := range seqs[:40] {
				if err := q.Ack(s); err != nil {
					t.Fatal(err)
				}
			}
			q.Close()
			l := readLayout(t, dir)
			first := ordOf(t, l.files[0])
			if first == 1 {
				t.Fatal("acknowledging 40 entries removed no segment")
			}
			mustRemove(t, l.files[0])
			mustRemove(t, l.files[1])
			gone := append(slices.Clone(seqs[:40]), l.seqs[0]...)
			return append(gone, l.seqs[1]...), first, true
		}},
		{"acknowledged segments removed", func(t *testing.T, dir string, q *Queue, seqs []uint64) ([]uint64, uint64, bool) {
			for _, s := range seqs[:60] {
				q.Ack(s)
			}
			q.Close()
			return seqs[:60], 0, false
		}},
		{"everything acknowledged", func(t *testing.T, dir string, q *Queue, seqs []uint64) ([]uint64, uint64, bool) {
			for _, s := range seqs {
				q.Ack(s)
			}
			q.Close()
			return seqs, 0, false
		}},
		{"subdirectories are not segments", func(t *testing.T, dir string, q *Queue, seqs []uint64) ([]uint64, uint64, bool) {
			q.Close()
			// dead/ belongs to the dead-letter store, which reads its own files.
			for _, d := range []string{"x.tmp", "00000000000000000999.seg", "other"} {
				if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, name := range []string{"00000000000000000001.seg", "MANIFEST", "a.tmp"} {
				if err := os.WriteFile(filepath.Join(dir, "other", name), []byte("not the queue's"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			return nil, 0, false
		}},
		{"manifest deleted", func(t *testing.T, dir string, q *Queue, seqs []uint64) ([]uint64, uint64, bool) {
			q.Close()
			mustRemove(t, filepath.Join(dir, "MANIFEST"))
			return nil, 0, true
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			q := mustOpen(t, dir, WithSegmentSize(segSize))
			seqs := enqueueN(t, q, 150)
			if n := segCount(t, dir); n < 5 {
				t.Fatalf("only %d segments", n)
			}
			gone, lostSeg, wantReport := tt.prepare(t, dir, q, seqs)
			q, reports := openWithin(t, dir, WithSegmentSize(segSize))
			defer func() { q.Close() }()
			for _, r := range reports {
				t.Logf("reported: %v", r)
			}
			if !wantReport && len(reports) > 0 {
				t.Fatalf("%d reports for a directory that lost nothing", len(reports))
			}
			if wantReport && len(reports) == 0 {
				t.Fatal("the loss was not reported")
			}
			if lostSeg != 0 {
				var seg, entries bool
				for _, r := range reports {
					seg = seg || r.Segment == lostSeg
					entries = entries || strings.Contains(r.Reason, "entries")
				}
				if !seg || !entries {
					t.Fatalf("no report names segment %d (%v) and the lost entries (%v)", lostSeg, seg, entries)
				}
			}
			want := slices.DeleteFunc(slices.Clone(seqs), func(s uint64) bool { return slices.Contains(gone, s) })
			if got := seqsOf(readAll(t, q)); !slices.Equal(got, want) {
				t.Fatalf("entries %v\nwant %v", got, want)
			}
			if st := q.Stats(); st.Depth != len(want) {
				t.Fatalf("depth %d, want %d", st.Depth, len(want))
			}
			e := tern.QueueEntry{Message: msg(1)}
			if err := q.Enqueue(ctx, &e); err != nil || e.Seq <= seqs[len(seqs)-1] {
				t.Fatalf("Enqueue: seq %d, %v", e.Seq, err)
			}
			// Reported once: a second Open of the same directory is quiet.
			q.Close()
			q, reports = openWithin(t, dir, WithSegmentSize(segSize))
			if len(reports) > 0 {
				t.Fatalf("reported again at the next Open: %v", reports)
			}
			if tt.name == "subdirectories are not segments" {
				if _, err := os.Stat(filepath.Join(dir, "x.tmp")); err != nil {
					t.Fatalf("a subdirectory was removed: %v", err)
				}
			}
		})
	}
}

// TestDepthExcludesFailedEnqueue: an entry whose Enqueue failed (the log's fsync failed) is
// not counted in Stats. [promise: depth metrics are exact]
func TestDepthExcludesFailedEnqueue(t *testing.T) {
	t.Parallel()
	for _, op := range []faultfs.Op{faultfs.OpWrite, faultfs.OpSync} {
		t.Run(op.String(), func(t *testing.T) {
			t.Parallel()
			fsys := faultfs.New(OSFS())
			q := mustOpen(t, t.TempDir(), WithFS(fsys))
			defer q.Close()
			enqueueN(t, q, 10)
			boom := errors.New("injected I/O error")
			fsys.SetFault(func(o faultfs.Op, _ string) error {
				if o == op {
					return boom
				}
				return nil
			})
			e := tern.QueueEntry{Message: msg(99)}
			if err := q.Enqueue(ctx, &e); !errors.Is(err, boom) {
				t.Fatalf("Enqueue with a failing %v: %v", op, err)
			}
			if st := q.Stats(); st.Depth != 10 {
				t.Fatalf("depth %d after a failed Enqueue, want 10", st.Depth)
			}
		})
	}
}

// TestOldFormatOpens opens a directory written by the version 1 format (testdata/v1,
// produced by the code before the manifest existed: 40 entries, 1 to 25 and 28 and 30
// acknowledged, segment 1 removed): every entry is there, nothing is reported, and the
// queue goes on with a manifest.
func TestOldFormatOpens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join("testdata", "v1")
	files, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		copyFile(t, filepath.Join(src, f.Name()), filepath.Join(dir, f.Name()))
	}
	var want []uint64
	for s := uint64(26); s <= 40; s++ {
		if s != 28 && s != 30 {
			want = append(want, s)
		}
	}
	for round := range 2 {
		q, reports := openWithin(t, dir, WithSegmentSize(1<<10))
		if len(reports) > 0 {
			t.Fatalf("round %d: reports for an intact old directory: %v", round, reports)
		}
		got := readAll(t, q)
		if !slices.Equal(seqsOf(got), want) {
			q.Close()
			t.Fatalf("round %d: entries %v, want %v", round, seqsOf(got), want)
		}
		for _, e := range got {
			if e.Seq <= 40 && string(e.Message.Payload) != string(msg(int(e.Seq-1)).Payload) {
				q.Close()
				t.Fatalf("entry %d: payload %q", e.Seq, e.Message.Payload)
			}
		}
		e := tern.QueueEntry{Message: msg(int(40 + round))}
		if err := q.Enqueue(ctx, &e); err != nil || e.Seq != uint64(41+round) {
			q.Close()
			t.Fatalf("round %d: Enqueue: seq %d, %v", round, e.Seq, err)
		}
		want = append(want, e.Seq)
		q.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		t.Fatalf("no manifest after reopening an old directory: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
