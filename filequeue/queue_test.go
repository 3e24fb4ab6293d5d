package filequeue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog"
	"github.com/ternmq/tern/internal/seglog/faultfs"
	"github.com/ternmq/tern/internal/seglog/segtest"
	"github.com/ternmq/tern/packet"
)

var ctx = context.Background()

func mustOpen(t testing.TB, dir string, opts ...Option) *Queue {
	t.Helper()
	q, err := Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return q
}

func msg(i int) tern.PublishOptions {
	return tern.PublishOptions{Topic: "t/" + fmt.Sprint(i%7), Payload: []byte(fmt.Sprintf("payload-%d", i)), QoS: 1}
}

// enqueueN enqueues n messages and returns their sequence numbers.
func enqueueN(t testing.TB, q *Queue, n int) []uint64 {
	t.Helper()
	seqs := make([]uint64, n)
	for i := range n {
		e := tern.QueueEntry{Message: msg(i)}
		if err := q.Enqueue(ctx, &e); err != nil {
			t.Fatalf("Enqueue %d: %v", i, err)
		}
		seqs[i] = e.Seq
	}
	return seqs
}

// readAll reads every entry the queue would hand out, in small batches.
func readAll(t testing.TB, q *Queue) []tern.QueueEntry {
	t.Helper()
	var out []tern.QueueEntry
	var after uint64
	for {
		batch, err := q.Read(after, 37, nil)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if len(batch) == 0 {
			return out
		}
		out = append(out, batch...)
		after = batch[len(batch)-1].Seq
	}
}

func seqsOf(es []tern.QueueEntry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func TestRoundTripEveryField(t *testing.T) {
	t.Parallel()
	msgs := []tern.PublishOptions{
		{Topic: "a", QoS: 1},
		{Topic: "b/c", Payload: []byte("hello"), QoS: 2, Retain: true},
		{
			Topic: "full", Payload: make([]byte, 70_000), QoS: 1, PayloadFormat: 1,
			MessageExpiry: 90 * time.Second, ContentType: "text/plain", ResponseTopic: "reply/here",
			CorrelationData: []byte{0, 1, 2},
			UserProperties:  []packet.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: ""}, {Key: "", Value: "x"}},
		},
	}
	dir := t.TempDir()
	q := mustOpen(t, dir, WithSegmentSize(4<<10))
	var want []tern.QueueEntry
	for _, m := range msgs {
		e := tern.QueueEntry{Message: m}
		if err := q.Enqueue(ctx, &e); err != nil {
			t.Fatal(err)
		}
		if e.Seq == 0 || e.Time.IsZero() {
			t.Fatalf("Enqueue left Seq %d Time %v", e.Seq, e.Time)
		}
		want = append(want, e)
	}
	check := func(stage string, got []tern.QueueEntry) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d entries, want %d", stage, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.Seq != w.Seq || !g.Time.Equal(w.Time) || !reflect.DeepEqual(g.Message, w.Message) {
				t.Fatalf("%s: entry %d\n got %+v\nwant %+v", stage, i, g, w)
			}
		}
	}
	check("before close", readAll(t, q))
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, dir, WithSegmentSize(4<<10))
	defer q.Close()
	check("after reopen", readAll(t, q))
}

func TestOutOfOrderAcksSurviveRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := []Option{WithSegmentSize(2 << 10)}
	q := mustOpen(t, dir, opts...)
	seqs := enqueueN(t, q, 600)
	rng := rand.New(rand.NewPCG(1, 2))
	acked := map[uint64]bool{}
	for _, i := range rng.Perm(len(seqs))[:350] {
		if err := q.Ack(seqs[i]); err != nil {
			t.Fatal(err)
		}
		acked[seqs[i]] = true
	}
	// A run at the front, so whole segments go.
	for _, s := range seqs[:100] {
		q.Ack(s)
		acked[s] = true
	}
	var want []uint64
	for _, s := range seqs {
		if !acked[s] {
			want = append(want, s)
		}
	}
	if got := seqsOf(readAll(t, q)); !slices.Equal(got, want) {
		t.Fatalf("before restart: %d entries, want %d", len(got), len(want))
	}
	st := q.Stats()
	q.Close()

	q = mustOpen(t, dir, opts...)
	defer q.Close()
	if got := seqsOf(readAll(t, q)); !slices.Equal(got, want) {
		t.Fatalf("after restart: %v\nwant %v", got, want)
	}
	st2 := q.Stats()
	if st2.Depth != len(want) || !st2.Oldest.Equal(st.Oldest) {
		t.Fatalf("stats after restart %+v, before %+v, want depth %d", st2, st, len(want))
	}
	e := tern.QueueEntry{Message: msg(0)}
	if err := q.Enqueue(ctx, &e); err != nil || e.Seq <= seqs[len(seqs)-1] {
		t.Fatalf("Enqueue after restart: seq %d, err %v; last before %d", e.Seq, err, seqs[len(seqs)-1])
	}
}

func segCount(t *testing.T, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

func TestSegmentsDeletedWhenAcked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := mustOpen(t, dir, WithSegmentSize(1<<10))
	defer q.Close()
	seqs := enqueueN(t, q, 300)
	files, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(files) < 10 {
		t.Fatalf("only %d segments", len(files))
	}
	// Acknowledging everything but the first entry deletes nothing: it is in the oldest.
	for _, s := range seqs[1:] {
		q.Ack(s)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("acking all but the oldest entry removed %s: %v", f, err)
		}
	}
	q.Ack(seqs[0])
	// Left: at most the segment naming the newest acknowledgement and the active one.
	if n := segCount(t, dir); n > 2 {
		t.Fatalf("%d segments left after acking everything", n)
	}
	if st := q.Stats(); st.Depth != 0 || st.Bytes != 0 || !st.Oldest.IsZero() {
		t.Fatalf("stats of an empty queue: %+v", st)
	}
	q.Close()
	// The sequence goes on after a restart even though the entries are gone.
	q2 := mustOpen(t, dir, WithSegmentSize(1<<10))
	defer q2.Close()
	if got := readAll(t, q2); len(got) != 0 {
		t.Fatalf("acknowledged entries came back: %v", seqsOf(got))
	}
	e := tern.QueueEntry{Message: msg(1)}
	if err := q2.Enqueue(ctx, &e); err != nil || e.Seq != seqs[len(seqs)-1]+1 {
		t.Fatalf("next seq %d (%v), want %d", e.Seq, err, seqs[len(seqs)-1]+1)
	}
}

func TestStatsOldest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := mustOpen(t, dir, WithSegmentSize(1<<10), WithSync(SyncNone))
	var entries []tern.QueueEntry
	for i := range 3000 { // more than the in-memory ring of recent times
		e := tern.QueueEntry{Message: msg(i)}
		if err := q.Enqueue(ctx, &e); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	check := func(q *Queue, oldest int, depth int) {
		t.Helper()
		st := q.Stats()
		if st.Depth != depth || !st.Oldest.Equal(entries[oldest].Time) {
			t.Fatalf("stats %+v, want depth %d oldest %v (entry %d)", st, depth, entries[oldest].Time, oldest)
		}
		if st.Bytes <= 0 {
			t.Fatalf("bytes %d with %d entries", st.Bytes, depth)
		}
	}
	check(q, 0, 3000)
	q.Ack(entries[1].Seq) // out of order: the oldest stays
	check(q, 0, 2999)
	q.Ack(entries[0].Seq)
	check(q, 2, 2998)
	for _, e := range entries[2:1500] {
		q.Ack(e.Seq)
	}
	check(q, 1500, 1500)
	q.Close()
	q = mustOpen(t, dir, WithSegmentSize(1<<10))
	defer q.Close()
	check(q, 1500, 1500) // read from disk: nothing recent in memory
	q.Ack(entries[1500].Seq)
	check(q, 1501, 1499)
}

// TestAgainstMemoryQueue runs random operations on a Queue and on tern.MemoryQueue, the
// reference, restarting the Queue now and then: every Read and Depth must agree.
func TestAgainstMemoryQueue(t *testing.T) {
	t.Parallel()
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 99))
			dir := t.TempDir()
			opts := []Option{WithSegmentSize(int64(1024 + rng.IntN(4096))), WithSync(SyncNone)}
			q := mustOpen(t, dir, opts...)
			defer func() { q.Close() }()
			ref := tern.NewMemoryQueue()
			var live []uint64
			offset := uint64(0) // the two queues number from 1; they stay in step
			for step := range 3000 {
				switch op := rng.IntN(100); {
				case op < 45:
					m := msg(step)
					a, b := tern.QueueEntry{Message: m}, tern.QueueEntry{Message: m}
					if err := q.Enqueue(ctx, &a); err != nil {
						t.Fatal(err)
					}
					ref.Enqueue(ctx, &b)
					if a.Seq != b.Seq+offset {
						t.Fatalf("step %d: seq %d, reference %d", step, a.Seq, b.Seq)
					}
					live = append(live, a.Seq)
				case op < 75 && len(live) > 0:
					// Mostly near the front, like a drain; sometimes anywhere.
					i := rng.IntN(min(len(live), 1+rng.IntN(8)))
					if rng.IntN(5) == 0 {
						i = rng.IntN(len(live))
					}
					s := live[i]
					live = slices.Delete(live, i, i+1)
					if err := q.Ack(s); err != nil {
						t.Fatal(err)
					}
					ref.Ack(s)
				case op < 97:
					var after uint64
					if len(live) > 0 && rng.IntN(3) > 0 {
						after = live[rng.IntN(len(live))] - uint64(rng.IntN(2))
					}
					n := 1 + rng.IntN(20)
					got, err := q.Read(after, n, nil)
					if err != nil {
						t.Fatal(err)
					}
					want, _ := ref.Read(after, n, nil)
					if !slices.Equal(seqsOf(got), seqsOf(want)) {
						t.Fatalf("step %d: Read(%d, %d) = %v, want %v", step, after, n, seqsOf(got), seqsOf(want))
					}
					for i := range got {
						if !reflect.DeepEqual(got[i].Message, want[i].Message) {
							t.Fatalf("step %d: message %d differs", step, got[i].Seq)
						}
					}
				default:
					if err := q.Close(); err != nil {
						t.Fatal(err)
					}
					q = mustOpen(t, dir, opts...)
				}
				if d, w := q.Stats().Depth, ref.Stats().Depth; d != w {
					t.Fatalf("step %d: depth %d, want %d", step, d, w)
				}
			}
		})
	}
}

func TestLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := mustOpen(t, dir)
	if _, err := Open(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	q.Close()
	q2 := mustOpen(t, dir)
	q2.Close()
}

func TestClosed(t *testing.T) {
	t.Parallel()
	q := mustOpen(t, t.TempDir())
	q.Close()
	e := tern.QueueEntry{Message: msg(1)}
	if err := q.Enqueue(ctx, &e); !errors.Is(err, tern.ErrQueueClosed) {
		t.Fatalf("Enqueue: %v", err)
	}
	if _, err := q.Read(0, 1, nil); !errors.Is(err, tern.ErrQueueClosed) {
		t.Fatalf("Read: %v", err)
	}
	if err := q.Ack(1); !errors.Is(err, tern.ErrQueueClosed) {
		t.Fatalf("Ack: %v", err)
	}
	if err := q.Close(); !errors.Is(err, tern.ErrQueueClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

func TestEnqueueCancelled(t *testing.T) {
	t.Parallel()
	q := mustOpen(t, t.TempDir())
	defer q.Close()
	c, cancel := context.WithCancel(ctx)
	cancel()
	e := tern.QueueEntry{Message: msg(1)}
	if err := q.Enqueue(c, &e); !errors.Is(err, context.Canceled) {
		t.Fatalf("Enqueue: %v", err)
	}
	if st := q.Stats(); st.Depth != 0 {
		t.Fatalf("a cancelled Enqueue stored something: %+v", st)
	}
}

func TestNotify(t *testing.T) {
	t.Parallel()
	q := mustOpen(t, t.TempDir())
	defer q.Close()
	if cap(q.Notify()) != 1 {
		t.Fatalf("Notify capacity %d, want 1", cap(q.Notify()))
	}
	enqueueN(t, q, 3)
	select {
	case <-q.Notify():
	default:
		t.Fatal("no notification after Enqueue")
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c := defaultConfig()
	if c.SegmentSize != DefaultSegmentSize || c.Sync != SyncEveryWrite || c.FS == nil {
		t.Fatalf("defaultConfig %+v does not match the documented defaults", c)
	}
	if err := (&config{Shared: seglog.Shared{Sync: SyncInterval(0), SegmentSize: DefaultSegmentSize, FS: OSFS()}, maxPending: 1}).validate(); err == nil {
		t.Fatal("SyncInterval(0) accepted")
	}
}

// TestSyncPolicies checks when each policy syncs, counting fsyncs through the FS wrapper.
func TestSyncPolicies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		policy     SyncPolicy
		syncsAfter func(n int64) bool // file syncs seen after 20 sequential Enqueues
	}{
		{SyncEveryWrite, func(n int64) bool { return n >= 20 }},
		{SyncInterval(time.Hour), func(n int64) bool { return n == 0 }},
		{SyncNone, func(n int64) bool { return n == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			t.Parallel()
			fsys := faultfs.New(OSFS())
			q := mustOpen(t, t.TempDir(), WithFS(fsys), WithSync(tt.policy))
			// The first Enqueue creates the segment, which the manifest records (synced
			// unless SyncNone), as Open records its reservation: count from there.
			enqueueN(t, q, 1)
			base := fsys.Syncs()
			enqueueN(t, q, 20)
			if n := fsys.Syncs() - base; !tt.syncsAfter(n) {
				t.Fatalf("%d syncs after 20 Enqueues", n)
			}
			before := fsys.Syncs()
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			if fsys.Syncs() == before && tt.policy != SyncEveryWrite {
				t.Fatal("Close did not sync")
			}
		})
	}
	t.Run("interval-ticks", func(t *testing.T) {
		t.Parallel()
		fsys := faultfs.New(OSFS())
		q := mustOpen(t, t.TempDir(), WithFS(fsys), WithSync(SyncInterval(time.Millisecond)))
		defer q.Close()
		enqueueN(t, q, 1)
		select {
		case <-fsys.SyncNotify():
		case <-time.After(10 * time.Second):
			t.Fatal("no background sync")
		}
	})
}

// syncedSeqs returns the entry sequence numbers in the synced prefix of every segment:
// what would survive if the machine died now.
func syncedSeqs(t *testing.T, fsys *faultfs.FS, dir string) map[uint64]bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	out := map[uint64]bool{}
	for _, f := range files {
		synced, ok := segtest.SyncedPrefix(fsys, f)
		if !ok {
			t.Fatalf("segment %s vanished", f)
		}
		for _, r := range segtest.ParseRecords(synced) {
			if r.Type == typeEntry {
				seq, _, _ := entryHead(r.Payload)
				out[seq] = true
			}
		}
	}
	return out
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fsys := faultfs.New(OSFS())
	q := mustOpen(t, dir, WithFS(fsys))
	defer q.Close()
	const producers, each = 64, 10
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e := tern.QueueEntry{Message: msg(p*each + i)}
				if err := q.Enqueue(ctx, &e); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				// At this moment the entry must already be in the synced part of the file.
				mu.Lock()
				if !syncedSeqs(t, fsys, dir)[e.Seq] {
					errs = append(errs, fmt.Errorf("Enqueue of %d returned before a sync covered it", e.Seq))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	syncs := fsys.Syncs()
	if syncs >= producers*each {
		t.Fatalf("%d fsyncs for %d Enqueues: no group commit", syncs, producers*each)
	}
	t.Logf("%d Enqueues, %d fsyncs, %d writes", producers*each, syncs, fsys.Writes())
}

// TestMemoryFlat enqueues 200,000 entries: the heap must not grow with the backlog.
func TestMemoryFlat(t *testing.T) {
	q := mustOpen(t, t.TempDir(), WithSync(SyncNone), WithSegmentSize(4<<20))
	defer q.Close()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	enqueueN(t, q, 1000) // warm up pools and buffers
	base := heap()
	const total, workers = 200_000, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := tern.QueueEntry{}
			for i := w; i < total; i += workers {
				e.Message = tern.PublishOptions{Topic: "m", Payload: []byte("0123456789"), QoS: 1}
				if err := q.Enqueue(ctx, &e); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Out-of-order acknowledgements are the one thing kept per entry: a few thousand.
	batch, err := q.Read(0, 2000, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(batch) - 1; i >= 0; i -= 2 {
		q.Ack(batch[i].Seq)
	}
	batch = nil
	grown := int64(heap()) - int64(base)
	if q.Stats().Depth != total { // 1,000 warm-up entries, 1,000 acknowledged
		t.Fatalf("depth %d", q.Stats().Depth)
	}
	t.Logf("heap in use grew by %d KiB for %d entries", grown/1024, total)
	if grown > 3<<20 {
		t.Fatalf("heap in use grew by %d bytes for %d entries: memory follows the backlog", grown, total)
	}
}
