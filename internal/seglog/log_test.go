package seglog_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/seglog"
	"github.com/ternmq/tern/internal/seglog/faultfs"
)

var ctx = context.Background()

// rec is a record as the tests see it.
type rec struct {
	typ     byte
	payload string
	pos     seglog.Pos
}

// collector gathers replayed records and corruption reports.
type collector struct {
	mu      sync.Mutex
	recs    []rec
	reports []seglog.Corruption
}

func (c *collector) options(o seglog.Options) seglog.Options {
	o.Replay = func(r seglog.Record) error {
		c.recs = append(c.recs, rec{r.Type, string(r.Payload), r.Pos})
		return nil
	}
	o.OnCorruption = func(x seglog.Corruption) {
		c.mu.Lock()
		c.reports = append(c.reports, x)
		c.mu.Unlock()
	}
	if o.Version == 0 {
		o.Version = 1
	}
	return o
}

func (c *collector) reasons() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s []string
	for _, r := range c.reports {
		s = append(s, r.String())
	}
	return strings.Join(s, "; ")
}

func mustOpen(t *testing.T, dir string, o seglog.Options) (*seglog.Log, *collector) {
	t.Helper()
	c := &collector{}
	l, err := seglog.Open(dir, c.options(o))
	if err != nil {
		t.Fatalf("seglog.Open: %v", err)
	}
	return l, c
}

// appendAll adds and waits for each payload in turn, returning the records with positions.
func appendAll(t *testing.T, l *seglog.Log, typ byte, payloads ...string) []rec {
	t.Helper()
	var out []rec
	for _, p := range payloads {
		tk, err := l.Add(typ, []byte(p))
		if err != nil {
			t.Fatalf("Add: %v", err)
		}
		if err := l.Wait(ctx, tk, true); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		out = append(out, rec{typ, p, tk.Pos})
	}
	return out
}

func payloads(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d-%s", prefix, i, strings.Repeat("x", i%37))
	}
	return out
}

func readAll(t *testing.T, l *seglog.Log, from seglog.Pos) []rec {
	t.Helper()
	r := l.NewReader(from)
	defer r.Close()
	var out []rec
	for {
		x, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, rec{x.Type, string(x.Payload), x.Pos})
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, segSize := range []int64{0, 200, 1 << 10} {
		t.Run(fmt.Sprint(segSize), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			l, _ := mustOpen(t, dir, seglog.Options{SegmentSize: segSize})
			want := appendAll(t, l, 1, payloads(100, "a")...)
			want = append(want, appendAll(t, l, 2, "", "b")...)
			if got := readAll(t, l, seglog.Pos{}); !slices.Equal(got, want) {
				t.Fatalf("reader before close: %d records, want %d", len(got), len(want))
			}
			// A reader from the middle starts there.
			mid := want[57].pos
			if got := readAll(t, l, mid); !slices.Equal(got, want[57:]) {
				t.Fatalf("reader from %v: %d records, want %d", mid, len(got), len(want)-57)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, c := mustOpen(t, dir, seglog.Options{SegmentSize: segSize})
			if !slices.Equal(c.recs, want) {
				t.Fatalf("replay: got %d records, want %d\n%v\n%v", len(c.recs), len(want), c.recs, want)
			}
			if len(c.reports) != 0 {
				t.Fatalf("reports on a clean log: %s", c.reasons())
			}
			more := appendAll(t, l, 3, "after-reopen")
			if got := readAll(t, l, seglog.Pos{}); !slices.Equal(got, append(want, more...)) {
				t.Fatalf("reader after reopen: %d records", len(got))
			}
			if segSize > 0 && len(l.Segments()) < 3 {
				t.Fatalf("segment size %d: only %d segments", segSize, len(l.Segments()))
			}
			l.Close()
		})
	}
}

func TestReaderFollowsGrowth(t *testing.T) {
	t.Parallel()
	l, _ := mustOpen(t, t.TempDir(), seglog.Options{SegmentSize: 100})
	defer l.Close()
	r := l.NewReader(seglog.Pos{})
	defer r.Close()
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("empty log: %v, want EOF", err)
	}
	for i, p := range payloads(20, "g") {
		appendAll(t, l, 1, p)
		x, err := r.Next()
		if err != nil || string(x.Payload) != p {
			t.Fatalf("record %d: %q %v, want %q", i, x.Payload, err, p)
		}
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("after record %d: %v, want EOF", i, err)
		}
	}
}

func TestSyncPolicies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy seglog.SyncPolicy
		// synced: a durable Wait returns only once the record is synced.
		synced bool
	}{
		{"every", seglog.SyncPolicy{Mode: seglog.SyncEvery}, true},
		{"interval-long", seglog.SyncPolicy{Mode: seglog.SyncPeriodic, Interval: time.Hour}, false},
		{"never", seglog.SyncPolicy{Mode: seglog.SyncNever}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fsys := faultfs.New(seglog.OSFS())
			l, _ := mustOpen(t, dir, seglog.Options{FS: fsys, Sync: tt.policy, SegmentSize: 200})
			recs := appendAll(t, l, 1, payloads(30, "p")...)
			last := recs[len(recs)-1]
			end := last.pos.Off + int64(seglog.RecordSize(len(last.payload)))
			synced := fsys.SyncedSize(l.Path(last.pos.Seg))
			if tt.synced && synced < end {
				t.Fatalf("Wait returned with %d of %d bytes synced", synced, end)
			}
			if !tt.synced && synced >= end {
				t.Fatalf("the last record was synced under %s", tt.name)
			}
			if tt.policy.Mode == seglog.SyncNever && fsys.Syncs() != 0 {
				t.Fatalf("%d file syncs under %s", fsys.Syncs(), tt.name)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			if len(files) < 3 {
				t.Fatalf("%d segments", len(files))
			}
			for _, f := range files {
				st, _ := os.Stat(f)
				if got := fsys.SyncedSize(f); got != st.Size() {
					t.Fatalf("after Close %d of %d bytes of %s synced", got, st.Size(), f)
				}
			}
		})
	}
	t.Run("interval-ticks", func(t *testing.T) {
		t.Parallel()
		fsys := faultfs.New(seglog.OSFS())
		l, _ := mustOpen(t, t.TempDir(), seglog.Options{FS: fsys, Sync: seglog.SyncPolicy{Mode: seglog.SyncPeriodic, Interval: time.Millisecond}})
		defer l.Close()
		recs := appendAll(t, l, 1, "tick")
		end := recs[0].pos.Off + int64(seglog.RecordSize(4))
		deadline := time.After(10 * time.Second)
		for fsys.SyncedSize(l.Path(recs[0].pos.Seg)) < end {
			select {
			case <-fsys.SyncNotify():
			case <-deadline:
				t.Fatal("the background sync never came")
			}
		}
	})
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	fsys := faultfs.New(seglog.OSFS())
	l, _ := mustOpen(t, t.TempDir(), seglog.Options{FS: fsys})
	defer l.Close()
	const writers, each = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				p := []byte(fmt.Sprintf("w%d-%d", w, i))
				tk, err := l.Add(1, p)
				if err == nil {
					err = l.Wait(ctx, tk, true)
				}
				if err != nil {
					errs <- err
					return
				}
				// The record must be covered by a sync that already happened.
				if got := fsys.SyncedSize(l.Path(tk.Pos.Seg)); got < tk.Pos.Off+tk.Size {
					errs <- fmt.Errorf("%s returned with %d bytes synced, record ends at %d", p, got, tk.Pos.Off+tk.Size)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if syncs := fsys.Syncs(); syncs >= writers*each {
		t.Fatalf("%d syncs for %d appends: no group commit", syncs, writers*each)
	} else {
		t.Logf("%d appends, %d syncs, %d writes", writers*each, syncs, fsys.Writes())
	}
}

func TestLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, seglog.Options{})
	if _, err := seglog.Open(dir, seglog.Options{Version: 1}); !errors.Is(err, seglog.ErrLocked) {
		t.Fatalf("second seglog.Open: %v, want ErrLocked", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, _ := mustOpen(t, dir, seglog.Options{})
	l2.Close()
}

// segFiles returns the segment files of dir, oldest first.
func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestTornTail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		tear func(t *testing.T, path string, lastStart, size int64)
	}{
		{"cut mid-record", func(t *testing.T, path string, lastStart, size int64) {
			os.Truncate(path, lastStart+5)
		}},
		{"cut mid-header", func(t *testing.T, path string, lastStart, size int64) {
			os.Truncate(path, lastStart+3)
		}},
		{"zeros after the end", func(t *testing.T, path string, lastStart, size int64) {
			appendBytes(t, path, make([]byte, 4096))
		}},
		{"half a record appended", func(t *testing.T, path string, lastStart, size int64) {
			full := seglog.AppendRecord(nil, 1, 1, []byte("never completed"))
			appendBytes(t, path, full[:len(full)-4])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			l, _ := mustOpen(t, dir, seglog.Options{SegmentSize: 300})
			want := appendAll(t, l, 1, payloads(30, "t")...)
			l.Close()
			files := segFiles(t, dir)
			last := files[len(files)-1]
			st, _ := os.Stat(last)
			lastRec := want[len(want)-1]
			tt.tear(t, last, lastRec.pos.Off, st.Size())
			if strings.HasPrefix(tt.name, "cut") {
				want = want[:len(want)-1]
			}
			var l2 *seglog.Log
			var c *collector
			within(t, 10*time.Second, func() { l2, c = mustOpenErr(t, dir, seglog.Options{SegmentSize: 300}) })
			if l2 == nil {
				return
			}
			defer l2.Close()
			if !slices.Equal(c.recs, want) {
				t.Fatalf("replayed %d records, want %d", len(c.recs), len(want))
			}
			if len(c.reports) != 1 || !strings.Contains(c.reports[0].Reason, "torn tail") {
				t.Fatalf("reports: %s", c.reasons())
			}
			// The log goes on after the cut, and a second reopen is clean.
			more := appendAll(t, l2, 1, "after")
			l2.Close()
			l3, c3 := mustOpen(t, dir, seglog.Options{SegmentSize: 300})
			defer l3.Close()
			if !slices.Equal(c3.recs, append(want, more...)) || len(c3.reports) != 0 {
				t.Fatalf("second reopen: %d records, reports %s", len(c3.recs), c3.reasons())
			}
		})
	}
}

// mustOpenErr is mustOpen for use inside within: it reports with Errorf.
func mustOpenErr(t *testing.T, dir string, o seglog.Options) (*seglog.Log, *collector) {
	c := &collector{}
	l, err := seglog.Open(dir, c.options(o))
	if err != nil {
		t.Errorf("seglog.Open: %v", err)
		return nil, nil
	}
	return l, c
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func patchFile(t *testing.T, path string, off int64, fn func(b []byte)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fn(b[off:])
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionMidFile(t *testing.T) {
	t.Parallel()
	// Three segments of ten records each; the damage hits the middle of the first or of the
	// last segment. Every record not touched must come back.
	tests := []struct {
		name    string
		seg     int // index of the damaged segment
		rec     int // first damaged record in it
		damaged int // records lost
		damage  func(b []byte)
	}{
		{"flipped payload bit", 0, 4, 1, func(b []byte) { b[12] ^= 0x10 }},
		{"flipped crc bit", 0, 4, 1, func(b []byte) { b[5] ^= 0x01 }},
		{"huge length", 0, 4, 1, func(b []byte) { binary.LittleEndian.PutUint32(b, 1<<31) }},
		{"length past end", 0, 4, 1, func(b []byte) { binary.LittleEndian.PutUint32(b, 5000) }},
		{"zero length", 0, 4, 1, func(b []byte) { binary.LittleEndian.PutUint32(b, 0) }},
		{"zeroed span", 0, 4, 3, func(b []byte) { clear(b[:2*recSize+3]) }},
		{"version zero", 0, 4, 1, func(b []byte) { b[8] = 0 }},
		{"last segment bit flip", 2, 3, 1, func(b []byte) { b[10] ^= 0xFF }},
		{"last segment length", 2, 3, 1, func(b []byte) { binary.LittleEndian.PutUint32(b, 7) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			l, _ := mustOpen(t, dir, seglog.Options{SegmentSize: 10 * recSize})
			var want []rec
			for i := range 30 {
				want = append(want, appendAll(t, l, 1, fmt.Sprintf("record-%04d", i))...)
			}
			l.Close()
			files := segFiles(t, dir)
			if len(files) != 3 {
				t.Fatalf("%d segments, want 3", len(files))
			}
			first := tt.seg*10 + tt.rec
			patchFile(t, files[tt.seg], want[first].pos.Off, tt.damage)
			want = slices.Delete(want, first, first+tt.damaged)
			var l2 *seglog.Log
			var c *collector
			within(t, 10*time.Second, func() { l2, c = mustOpenErr(t, dir, seglog.Options{SegmentSize: 10 * recSize}) })
			if l2 == nil {
				return
			}
			defer l2.Close()
			if !slices.Equal(c.recs, want) {
				t.Fatalf("replayed %d records, want %d: %v", len(c.recs), len(want), c.recs)
			}
			if len(c.reports) != 1 || c.reports[0].Offset != want[first-1].pos.Off+recSize {
				t.Fatalf("reports: %s", c.reasons())
			}
			// Readers skip the known region silently.
			if got := readAll(t, l2, seglog.Pos{}); !slices.Equal(got, want) {
				t.Fatalf("reader: %d records, want %d", len(got), len(want))
			}
			if len(c.reports) != 1 {
				t.Fatalf("reader reported again: %s", c.reasons())
			}
		})
	}
}

// recSize is the size of a test record "record-NNNN".
const recSize = seglog.HeaderSize + seglog.MinLen + 11

func TestEmptyAndMissingSegments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, seglog.Options{SegmentSize: 5 * recSize})
	var want []rec
	for i := range 25 {
		want = append(want, appendAll(t, l, 1, fmt.Sprintf("record-%04d", i))...)
	}
	l.Close()
	files := segFiles(t, dir)
	if len(files) != 5 {
		t.Fatalf("%d segments, want 5", len(files))
	}
	os.Truncate(files[1], 0) // zero-length
	os.Remove(files[3])      // missing
	want = slices.Concat(want[:5], want[10:15], want[20:])
	var l2 *seglog.Log
	var c *collector
	within(t, 10*time.Second, func() { l2, c = mustOpenErr(t, dir, seglog.Options{SegmentSize: 5 * recSize}) })
	if l2 == nil {
		return
	}
	defer l2.Close()
	if !slices.Equal(c.recs, want) {
		t.Fatalf("replayed %d records, want %d", len(c.recs), len(want))
	}
	r := c.reasons()
	if !strings.Contains(r, "empty segment") || !strings.Contains(r, "missing segments 4 to 4") {
		t.Fatalf("reports: %s", r)
	}
	if got := readAll(t, l2, seglog.Pos{}); !slices.Equal(got, want) {
		t.Fatalf("reader: %d records, want %d", len(got), len(want))
	}
}

func TestFailedSyncFailsTheLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fsys := faultfs.New(seglog.OSFS())
	l, _ := mustOpen(t, dir, seglog.Options{FS: fsys})
	good := appendAll(t, l, 1, "before")
	boom := errors.New("injected EIO")
	fsys.SetFault(func(op faultfs.Op, _ string) error {
		if op == faultfs.OpSync {
			return boom
		}
		return nil
	})
	tk, err := l.Add(1, []byte("doomed"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(ctx, tk, true); !errors.Is(err, boom) || !errors.Is(err, seglog.ErrFailed) {
		t.Fatalf("Wait after failed sync: %v", err)
	}
	fsys.SetFault(nil)
	// The log refuses everything until reopened, even once the disk is healthy again.
	if _, err := l.Add(1, []byte("later")); !errors.Is(err, seglog.ErrFailed) {
		t.Fatalf("Add after failure: %v", err)
	}
	l.Close()
	l2, c := mustOpen(t, dir, seglog.Options{})
	defer l2.Close()
	if len(c.recs) < 1 || c.recs[0] != good[0] {
		t.Fatalf("reopen: %v", c.recs)
	}
	appendAll(t, l2, 1, "healthy")
}

func TestFailedWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fsys := faultfs.New(seglog.OSFS())
	l, _ := mustOpen(t, dir, seglog.Options{FS: fsys})
	good := appendAll(t, l, 1, payloads(5, "ok")...)
	fsys.SetFault(func(op faultfs.Op, _ string) error {
		if op == faultfs.OpWrite {
			return errors.New("injected ENOSPC")
		}
		return nil
	})
	for _, durable := range []bool{true, false} {
		tk, err := l.Add(1, []byte("a record that will be torn in half"))
		if err == nil {
			err = l.Wait(ctx, tk, durable)
		}
		if err == nil {
			t.Fatal("a failed write reported success")
		}
	}
	fsys.SetFault(nil)
	l.Close()
	l2, c := mustOpen(t, dir, seglog.Options{})
	defer l2.Close()
	if !slices.Equal(c.recs, good) {
		t.Fatalf("reopen: %v, want %v", c.recs, good)
	}
	if len(c.reports) != 1 || !strings.Contains(c.reports[0].Reason, "torn tail") {
		t.Fatalf("reports: %s", c.reasons())
	}
}

func TestCrashKeepsSynced(t *testing.T) {
	t.Parallel()
	for _, mode := range []seglog.SyncMode{seglog.SyncEvery, seglog.SyncNever} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fsys := faultfs.New(seglog.OSFS())
			l, _ := mustOpen(t, dir, seglog.Options{FS: fsys, SegmentSize: 500, Sync: seglog.SyncPolicy{Mode: mode}})
			want := appendAll(t, l, 1, payloads(50, "c")...)
			if err := fsys.Crash(); err != nil {
				t.Fatal(err)
			}
			l.Close()
			l2, c := mustOpen(t, dir, seglog.Options{SegmentSize: 500})
			defer l2.Close()
			switch mode {
			case seglog.SyncEvery:
				if !slices.Equal(c.recs, want) {
					t.Fatalf("after crash: %d records, want all %d", len(c.recs), len(want))
				}
			case seglog.SyncNever:
				// Nothing was promised; what survives is a prefix.
				if !slices.Equal(c.recs, want[:len(c.recs)]) {
					t.Fatalf("after crash: not a prefix: %v", c.recs)
				}
			}
		})
	}
}

func TestRemoveThrough(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, seglog.Options{SegmentSize: 5 * recSize})
	defer l.Close()
	var want []rec
	for i := range 23 {
		want = append(want, appendAll(t, l, 1, fmt.Sprintf("record-%04d", i))...)
	}
	r := l.NewReader(seglog.Pos{})
	defer r.Close()
	if x, err := r.Next(); err != nil || string(x.Payload) != want[0].payload {
		t.Fatalf("first: %v %v", x, err)
	}
	got, err := l.RemoveThrough(2, nil)
	if err != nil || got != 2 {
		t.Fatalf("RemoveThrough(2) = %d, %v", got, err)
	}
	if n := len(segFiles(t, dir)); n != 3 {
		t.Fatalf("%d files left, want 3", n)
	}
	// The reader was inside segment 1: it goes on with segment 3.
	x, err := r.Next()
	if err != nil || string(x.Payload) != want[10].payload {
		t.Fatalf("after removal: %q %v, want %q", x.Payload, err, want[10].payload)
	}
	// The active segment is never removed.
	if got, _ := l.RemoveThrough(100, nil); got != 4 {
		t.Fatalf("RemoveThrough(100) removed through %d, want 4", got)
	}
}

func TestCompact(t *testing.T) {
	t.Parallel()
	for _, crashBeforeRemove := range []bool{false, true} {
		t.Run(fmt.Sprint("interrupted=", crashBeforeRemove), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fsys := faultfs.New(seglog.OSFS())
			l, _ := mustOpen(t, dir, seglog.Options{FS: fsys, SegmentSize: 5 * recSize})
			var old []rec
			for i := range 12 {
				old = append(old, appendAll(t, l, 1, fmt.Sprintf("record-%04d", i))...)
			}
			ord, err := l.Seal(ctx)
			if err != nil || ord != 3 {
				t.Fatalf("Seal = %d, %v", ord, err)
			}
			later := appendAll(t, l, 2, "after-seal")
			if crashBeforeRemove {
				fsys.SetFault(func(op faultfs.Op, _ string) error {
					if op == faultfs.OpRemove {
						return errors.New("injected crash")
					}
					return nil
				})
			}
			var kept []rec
			err = l.Compact(ord, func(add func(byte, []byte) (seglog.Pos, error)) error {
				for i, r := range old {
					if i%4 != 0 {
						continue
					}
					p, err := add(3, []byte(r.payload))
					if err != nil {
						return err
					}
					kept = append(kept, rec{3, r.payload, p})
				}
				return nil
			})
			if crashBeforeRemove != (err != nil) {
				t.Fatalf("Compact: %v", err)
			}
			fsys.Crash()
			l.Close()
			l2, c := mustOpen(t, dir, seglog.Options{SegmentSize: 5 * recSize})
			defer l2.Close()
			if want := append(kept, later...); !slices.Equal(c.recs, want) {
				t.Fatalf("after compaction: %v\nwant %v", c.recs, want)
			}
			if files := segFiles(t, dir); len(files) != 2 {
				t.Fatalf("files: %v", files)
			}
			if len(c.reports) != 0 {
				t.Fatalf("reports: %s", c.reasons())
			}
		})
	}
}

func TestLeftoverTmpRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, seglog.Options{})
	want := appendAll(t, l, 1, "keep")
	l.Close()
	tmp := filepath.Join(dir, "00000000000000000001.seg.tmp")
	os.WriteFile(tmp, seglog.AppendRecord(nil, 1, 1, []byte("half-done compaction")), 0o644)
	l2, c := mustOpen(t, dir, seglog.Options{})
	defer l2.Close()
	if !slices.Equal(c.recs, want) {
		t.Fatalf("records: %v", c.recs)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("tmp file still there: %v", err)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	t.Parallel()
	fsys := faultfs.New(seglog.OSFS())
	l, _ := mustOpen(t, t.TempDir(), seglog.Options{FS: fsys})
	defer l.Close()
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	fsys.SetFault(func(op faultfs.Op, _ string) error {
		if op == faultfs.OpSync {
			once.Do(func() { close(started) })
			<-release // hold the first sync so the second record waits behind it
		}
		return nil
	})
	first, _ := l.Add(1, []byte("first"))
	firstDone := make(chan error, 1)
	go func() { firstDone <- l.Wait(ctx, first, true) }()
	<-started
	c, cancel := context.WithCancel(ctx)
	second, _ := l.Add(1, []byte("second"))
	errc := make(chan error, 1)
	go func() { errc <- l.Wait(c, second, true) }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait: %v", err)
	}
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
}

func TestRecordTooLarge(t *testing.T) {
	t.Parallel()
	l, _ := mustOpen(t, t.TempDir(), seglog.Options{MaxRecord: 100})
	defer l.Close()
	if _, err := l.Add(1, bytes.Repeat([]byte("x"), 99)); !errors.Is(err, seglog.ErrTooLarge) {
		t.Fatalf("Add: %v", err)
	}
	if _, err := l.Add(seglog.TypeReserved, nil); err == nil {
		t.Fatal("reserved type accepted")
	}
}

// TestTornTailBeforeEmptySegment: the crash came after the next segment was created but
// before anything reached it; the tear in the segment before is still a torn tail.
func TestTornTailBeforeEmptySegment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, _ := mustOpen(t, dir, seglog.Options{SegmentSize: 5 * recSize})
	var want []rec
	for i := range 10 {
		want = append(want, appendAll(t, l, 1, fmt.Sprintf("record-%04d", i))...)
	}
	l.Close()
	files := segFiles(t, dir)
	os.Truncate(files[1], 4*recSize+7) // tear the last record of segment 2
	os.WriteFile(seglog.SegmentPath(dir, 3), nil, 0o644)
	want = want[:9]
	l2, c := mustOpen(t, dir, seglog.Options{SegmentSize: 5 * recSize})
	if !slices.Equal(c.recs, want) {
		t.Fatalf("replayed %v", c.recs)
	}
	r := c.reasons()
	if !strings.Contains(r, "torn tail") || !strings.Contains(r, "empty segment") || strings.Count(r, ";") != 1 {
		t.Fatalf("reports: %s", r)
	}
	want = append(want, appendAll(t, l2, 1, "after")...)
	l2.Close()
	l3, c3 := mustOpen(t, dir, seglog.Options{SegmentSize: 5 * recSize})
	defer l3.Close()
	if !slices.Equal(c3.recs, want) || len(c3.reports) != 0 {
		t.Fatalf("second reopen: %v, reports %s", c3.recs, c3.reasons())
	}
}
