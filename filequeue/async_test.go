package filequeue

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog/faultfs"
)

// syncGate holds every segment fsync until opened, and says when the first one is held.
type syncGate struct {
	held chan struct{} // closed when a sync first waits at the gate
	open chan struct{}
	once sync.Once
}

func newSyncGate(fsys *faultfs.FS) *syncGate {
	g := &syncGate{held: make(chan struct{}), open: make(chan struct{})}
	fsys.SetFault(func(op faultfs.Op, path string) error {
		if op != faultfs.OpSync || !strings.HasSuffix(path, ".seg") {
			return nil
		}
		g.once.Do(func() { close(g.held) })
		<-g.open
		return nil
	})
	return g
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// asyncRecorder collects the outcomes EnqueueAsync reports.
type asyncRecorder struct {
	mu     sync.Mutex
	seqs   []uint64
	errs   []error
	all    chan struct{}
	want   int
	check  func(seq uint64) bool // called in done: was the entry durable by then?
	early  []uint64
	closed bool
}

func (r *asyncRecorder) done(e *tern.QueueEntry) func(error) {
	return func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seqs = append(r.seqs, e.Seq)
		r.errs = append(r.errs, err)
		if err == nil && r.check != nil && !r.check(e.Seq) {
			r.early = append(r.early, e.Seq)
		}
		if len(r.seqs) == r.want && !r.closed {
			r.closed = true
			close(r.all)
		}
	}
}

// A single goroutine's EnqueueAsync calls share fsyncs: each returns before its entry is
// durable, done reports it only once a sync covers it, and entries added while a sync runs
// share the next one (the package promise: group commit, durable when reported).
func TestEnqueueAsyncGroupCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fsys := faultfs.New(OSFS())
	q := mustOpen(t, dir, WithFS(fsys))
	defer q.Close()
	const n = 100
	rec := &asyncRecorder{all: make(chan struct{}), want: n,
		check: func(seq uint64) bool { return syncedSeqs(t, fsys, dir)[seq] }}
	gate := newSyncGate(fsys)
	base := fsys.Syncs()

	seqs := make([]uint64, n)
	added := make(chan error, 1)
	go func() {
		for i := range n {
			e := &tern.QueueEntry{Message: msg(i)}
			if err := q.EnqueueAsync(ctx, e, rec.done(e)); err != nil {
				added <- err
				return
			}
			seqs[i] = e.Seq
			if i == 0 {
				// The committer now syncs the first entry; the rest arrive meanwhile.
				<-gate.held
			}
		}
		added <- nil
	}()
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("EnqueueAsync waited for a sync")
	}
	rec.mu.Lock()
	reported := len(rec.seqs)
	rec.mu.Unlock()
	if reported != 0 {
		t.Fatalf("%d entries reported durable while the sync was held", reported)
	}
	if got, _ := q.Read(0, n, nil); len(got) != 0 {
		t.Fatalf("Read returned %d entries not yet durable", len(got))
	}
	if d := q.Stats().Depth; d != 0 {
		t.Fatalf("Depth %d counts entries not yet durable", d)
	}
	close(gate.open)
	waitFor(t, rec.all, "every done")

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, err := range rec.errs {
		if err != nil {
			t.Fatalf("entry %d: %v", rec.seqs[i], err)
		}
		if rec.seqs[i] != seqs[i] {
			t.Fatalf("done %d reported entry %d, want %d (sequence order)", i, rec.seqs[i], seqs[i])
		}
	}
	if len(rec.early) > 0 {
		t.Fatalf("entries %v reported before a sync covered them", rec.early)
	}
	// One sync held the first entry; the 99 added meanwhile need one more (two if the
	// committer's first round raced the second entry), never one each.
	if syncs := fsys.Syncs() - base; syncs > 3 {
		t.Fatalf("%d syncs for %d entries from one goroutine: no group commit", syncs, n)
	}
	if got, _ := q.Read(0, n+1, nil); len(got) != n {
		t.Fatalf("Read returned %d entries, want %d", len(got), n)
	}
	if d := q.Stats().Depth; d != n {
		t.Fatalf("Depth %d, want %d", d, n)
	}
}

// A failed sync is reported to every entry waiting for it, which is then neither read nor
// counted (the package promise: nothing after a failed fsync is reported durable).
func TestEnqueueAsyncSyncFailure(t *testing.T) {
	t.Parallel()
	fsys := faultfs.New(OSFS())
	q := mustOpen(t, t.TempDir(), WithFS(fsys))
	defer q.Close()
	boom := errors.New("disk on fire")
	fsys.SetFault(func(op faultfs.Op, path string) error {
		if op == faultfs.OpSync {
			return boom
		}
		return nil
	})
	rec := &asyncRecorder{all: make(chan struct{}), want: 1}
	e := &tern.QueueEntry{Message: msg(0)}
	if err := q.EnqueueAsync(ctx, e, rec.done(e)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, rec.all, "done")
	rec.mu.Lock()
	err := rec.errs[0]
	rec.mu.Unlock()
	if !errors.Is(err, boom) {
		t.Fatalf("done got %v, want the sync failure", err)
	}
	e2 := &tern.QueueEntry{Message: msg(1)}
	if err := q.EnqueueAsync(ctx, e2, func(error) { t.Error("done called after a refused EnqueueAsync") }); err == nil {
		t.Fatal("EnqueueAsync accepted an entry after a failed sync")
	}
	if got, _ := q.Read(0, 10, nil); len(got) != 0 {
		t.Fatalf("Read returned %d entries whose sync failed", len(got))
	}
	if d := q.Stats().Depth; d != 0 {
		t.Fatalf("Depth %d counts entries whose sync failed", d)
	}
}

// WithMaxPending bounds the entries waiting for a sync: past it EnqueueAsync waits, bounded
// by its ctx (every buffer is bounded).
func TestEnqueueAsyncBounded(t *testing.T) {
	t.Parallel()
	fsys := faultfs.New(OSFS())
	q := mustOpen(t, t.TempDir(), WithFS(fsys), WithMaxPending(2))
	defer q.Close()
	gate := newSyncGate(fsys)
	rec := &asyncRecorder{all: make(chan struct{}), want: 3}
	for i := range 2 {
		e := &tern.QueueEntry{Message: msg(i)}
		if err := q.EnqueueAsync(ctx, e, rec.done(e)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, gate.held, "the sync")
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	e := &tern.QueueEntry{Message: msg(2)}
	if err := q.EnqueueAsync(short, e, rec.done(e)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third EnqueueAsync with two pending: %v, want a ctx error", err)
	}
	close(gate.open)
	if err := q.EnqueueAsync(ctx, e, rec.done(e)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, rec.all, "every done")
}

// Close settles every entry EnqueueAsync added: each done runs before Close returns, and
// the entries are there after a reopen (the package promise: stored entries stay stored).
func TestEnqueueAsyncClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := mustOpen(t, dir)
	const n = 500
	rec := &asyncRecorder{all: make(chan struct{}), want: n}
	for i := range n {
		e := &tern.QueueEntry{Message: msg(i)}
		if err := q.EnqueueAsync(ctx, e, rec.done(e)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rec.all:
	default:
		t.Fatal("Close returned before every done ran")
	}
	e := tern.QueueEntry{Message: msg(0)}
	if err := q.EnqueueAsync(ctx, &e, func(error) { t.Error("done after Close") }); !errors.Is(err, tern.ErrQueueClosed) {
		t.Fatalf("EnqueueAsync after Close: %v", err)
	}
	q = mustOpen(t, dir)
	defer q.Close()
	if got, _ := q.Read(0, n+1, nil); len(got) != n {
		t.Fatalf("after reopen Read returned %d entries, want %d", len(got), n)
	}
}

// AckBatch writes all its acknowledgements with one write, and they hold after a reopen
// (the package promise: an acknowledged entry is never read again).
func TestAckBatchOneWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fsys := faultfs.New(OSFS())
	q := mustOpen(t, dir, WithFS(fsys))
	seqs := enqueueN(t, q, 50)
	base := fsys.Writes()
	if err := q.AckBatch(append(seqs[10:], 999999, seqs[10])); err != nil {
		t.Fatal(err)
	}
	if w := fsys.Writes() - base; w != 1 {
		t.Fatalf("AckBatch of 40 took %d writes, want 1", w)
	}
	if d := q.Stats().Depth; d != 10 {
		t.Fatalf("Depth %d after acknowledging 40 of 50", d)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, dir)
	defer q.Close()
	got, _ := q.Read(0, 100, nil)
	if len(got) != 10 || got[9].Seq != seqs[9] {
		t.Fatalf("after reopen Read returned %d entries, want the 10 unacknowledged", len(got))
	}
}
