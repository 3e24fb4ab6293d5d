package filestore

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog/faultfs"
)

func mustOpen(t testing.TB, dir string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func mustPut(t testing.TB, s *Store, r tern.StoreRecord) {
	t.Helper()
	if err := s.Put(r); err != nil {
		t.Fatalf("Put %+v: %v", r, err)
	}
}

func mustLoad(t testing.TB, s tern.Store) []tern.StoreRecord {
	t.Helper()
	rs, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return rs
}

// sameRecords compares loaded records, times to the nanosecond.
func sameRecords(a, b []tern.StoreRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Kind != y.Kind || x.ID != y.ID || x.Seq != y.Seq || !x.Time.Equal(y.Time) ||
			!slices.Equal(x.Packet, y.Packet) {
			return false
		}
	}
	return true
}

func pkt(seq uint64) []byte { return []byte(fmt.Sprintf("packet-%d", seq)) }

var t0 = time.Unix(1_700_000_000, 0)

func TestPutLoadRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, dir)
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: 7, Seq: 30, Packet: pkt(30), Time: t0})
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: 3, Seq: 10, Packet: pkt(10), Time: t0.Add(time.Second)})
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: 9, Seq: 20, Packet: pkt(20), Time: t0.Add(2 * time.Second)})
	// PUBREC for id 9: the released record keeps the publish's Seq and Time.
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordReleased, ID: 9, Seq: 999, Time: t0.Add(time.Hour)})
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordInbound, ID: 9, Seq: 2, Time: t0})
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordInbound, ID: 4, Seq: 1, Time: t0})
	if err := s.Delete(tern.RecordPublish, 3); err != nil {
		t.Fatal(err)
	}
	want := []tern.StoreRecord{
		{Kind: tern.RecordReleased, ID: 9, Seq: 20, Time: t0.Add(2 * time.Second)},
		{Kind: tern.RecordPublish, ID: 7, Seq: 30, Packet: pkt(30), Time: t0},
		{Kind: tern.RecordInbound, ID: 4, Seq: 1, Time: t0},
		{Kind: tern.RecordInbound, ID: 9, Seq: 2, Time: t0},
	}
	if got := mustLoad(t, s); !sameRecords(got, want) {
		t.Fatalf("Load:\n got %+v\nwant %+v", got, want)
	}
	s.Close()
	s = mustOpen(t, dir)
	if got := mustLoad(t, s); !sameRecords(got, want) {
		t.Fatalf("Load after restart:\n got %+v\nwant %+v", got, want)
	}
	// Reset keeps only the publishes.
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = mustOpen(t, dir)
	defer s.Close()
	if got := mustLoad(t, s); !sameRecords(got, want[1:2]) {
		t.Fatalf("Load after Reset and restart:\n got %+v\nwant %+v", got, want[1:2])
	}
}

func TestZeroTimeStamped(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, t.TempDir())
	defer s.Close()
	before := time.Now()
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: 1, Seq: 1, Packet: pkt(1)})
	got := mustLoad(t, s)
	if len(got) != 1 || got[0].Time.Before(before.Add(-time.Second)) || got[0].Time.After(time.Now()) {
		t.Fatalf("stamp %v", got)
	}
}

// TestAgainstMemoryStore runs random operations on a Store and on tern.MemoryStore, the
// reference, with restarts and compactions along the way: Load must agree every time.
func TestAgainstMemoryStore(t *testing.T) {
	t.Parallel()
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 5))
			dir := t.TempDir()
			opts := []Option{WithSegmentSize(2 << 10), WithSync(SyncNone)}
			s := mustOpen(t, dir, opts...)
			defer func() { s.Close() }()
			ref := tern.NewMemoryStore()
			seq := uint64(0)
			kinds := []tern.RecordKind{tern.RecordPublish, tern.RecordReleased, tern.RecordInbound}
			for step := range 4000 {
				id := uint16(1 + rng.IntN(40))
				switch op := rng.IntN(100); {
				case op < 45:
					seq++
					r := tern.StoreRecord{Kind: kinds[rng.IntN(3)], ID: id, Seq: seq, Time: t0.Add(time.Duration(seq))}
					if r.Kind == tern.RecordPublish {
						r.Packet = pkt(seq)
					}
					mustPut(t, s, r)
					ref.Put(r)
				case op < 90:
					k := kinds[rng.IntN(3)]
					if err := s.Delete(k, id); err != nil {
						t.Fatal(err)
					}
					ref.Delete(k, id)
				case op < 92:
					if err := s.Reset(); err != nil {
						t.Fatal(err)
					}
					ref.Reset()
				case op < 95:
					s.Close()
					s = mustOpen(t, dir, opts...)
				default:
					if err := s.compact(); err != nil {
						t.Fatal(err)
					}
				}
				if step%50 == 0 || step == 3999 {
					want, _ := ref.Load()
					if got := mustLoad(t, s); !sameRecords(got, want) {
						t.Fatalf("step %d:\n got %+v\nwant %+v", step, got, want)
					}
				}
			}
		})
	}
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCompactionBoundsTheLog cycles many records through a small window: the files stay
// small because compaction runs in the background.
func TestCompactionBoundsTheLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	compacted := make(chan struct{}, 1)
	s := mustOpen(t, dir, WithSegmentSize(4<<10), WithSync(SyncNone), func(c *config) {
		c.onMaintain = func() {
			select {
			case compacted <- struct{}{}:
			default:
			}
		}
	})
	const window = 20
	for seq := uint64(1); seq <= 5000; seq++ {
		id := uint16(seq % 1000)
		mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: id, Seq: seq, Packet: pkt(seq), Time: t0})
		if seq > window {
			s.Delete(tern.RecordPublish, uint16((seq-window)%1000))
		}
	}
	select {
	case <-compacted:
	case <-time.After(10 * time.Second):
		t.Fatal("no compaction")
	}
	// Wait until the background has caught up: total close to live.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		total, live, busy := s.total, s.live, s.compacting
		s.mu.Unlock()
		if !busy && total < 6*(4<<10) {
			t.Logf("total %d bytes, live %d, %d files", total, live, len(segFiles(t, dir)))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log not compacted: total %d, live %d", total, live)
		}
		s.mu.Lock()
		s.maybeCompactLocked()
		s.mu.Unlock()
		select {
		case <-compacted:
		case <-time.After(time.Second):
		}
	}
	want := mustLoad(t, s)
	if len(want) != window {
		t.Fatalf("%d live records, want %d", len(want), window)
	}
	s.Close()
	s = mustOpen(t, dir)
	defer s.Close()
	if got := mustLoad(t, s); !sameRecords(got, want) {
		t.Fatalf("after restart: %+v\nwant %+v", got, want)
	}
}

func TestCompactionInterrupted(t *testing.T) {
	t.Parallel()
	for _, failOn := range []faultfs.Op{faultfs.OpRename, faultfs.OpRemove} {
		t.Run(failOn.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fsys := faultfs.New(OSFS())
			// No background compaction: it could run first and leave this one nothing to do.
			noAuto := func(c *config) { c.compactMin = math.MaxInt64 }
			s := mustOpen(t, dir, WithFS(fsys), WithSegmentSize(1<<10), noAuto)
			for seq := uint64(1); seq <= 200; seq++ {
				mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: uint16(seq), Seq: seq, Packet: pkt(seq), Time: t0})
				if seq%3 != 0 {
					s.Delete(tern.RecordPublish, uint16(seq))
				}
			}
			// Deletions are synced by the next Put, not by themselves.
			mustPut(t, s, tern.StoreRecord{Kind: tern.RecordInbound, ID: 1, Seq: 1, Time: t0})
			want := mustLoad(t, s)
			boom := errors.New("injected crash")
			fsys.SetFault(func(op faultfs.Op, _ string) error {
				if op == failOn {
					return boom
				}
				return nil
			})
			if err := s.compact(); !errors.Is(err, boom) {
				t.Fatalf("compact: %v", err)
			}
			fsys.Crash()
			s.Close()
			s = mustOpen(t, dir, WithSegmentSize(1<<10), noAuto)
			defer s.Close()
			if got := mustLoad(t, s); !sameRecords(got, want) {
				t.Fatalf("after an interrupted compaction:\n got %d records\nwant %d", len(got), len(want))
			}
			if tmp, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(tmp) != 0 {
				t.Fatalf("leftover %v", tmp)
			}
		})
	}
}

func TestTTL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	s := mustOpen(t, dir)
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: 1, Seq: 1, Packet: pkt(1), Time: now.Add(-3 * time.Hour)})
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordInbound, ID: 1, Seq: 2, Time: now.Add(-2 * time.Hour)})
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: 2, Seq: 3, Packet: pkt(3), Time: now.Add(-time.Minute)})
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordInbound, ID: 2, Seq: 4, Time: now})
	s.Close()

	// At Open.
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	purged := make(chan struct{}, 1)
	s = mustOpen(t, dir, WithTTL(time.Hour), func(c *config) {
		c.now = func() time.Time { return time.Unix(0, clock.Load()) }
		c.purgeEvery = time.Millisecond
		c.onMaintain = func() {
			select {
			case purged <- struct{}{}:
			default:
			}
		}
	})
	defer s.Close()
	got := mustLoad(t, s)
	if len(got) != 2 || got[0].ID != 2 || got[1].ID != 2 {
		t.Fatalf("after Open with TTL: %+v", got)
	}
	// Periodically: two hours later everything is gone.
	clock.Store(now.Add(2 * time.Hour).UnixNano())
	deadline := time.After(10 * time.Second)
	for len(mustLoad(t, s)) != 0 {
		select {
		case <-purged:
		case <-deadline:
			t.Fatalf("records still there: %+v", mustLoad(t, s))
		}
	}
	// A young record survives the sweeps.
	mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: 5, Seq: 5, Packet: pkt(5)})
	select { // a signal from before the Put
	case <-purged:
	default:
	}
	<-purged // this sweep may have started before the Put
	<-purged // this one started after
	if got := mustLoad(t, s); len(got) != 1 {
		t.Fatalf("young record purged: %+v", got)
	}
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fsys := faultfs.New(OSFS())
	s := mustOpen(t, dir, WithFS(fsys))
	defer s.Close()
	const writers, each = 64, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				seq := uint64(w*each + i + 1)
				r := tern.StoreRecord{Kind: tern.RecordPublish, ID: uint16(seq), Seq: seq, Packet: pkt(seq), Time: t0}
				if err := s.Put(r); err != nil {
					errs <- err
					return
				}
				if !syncedPuts(t, fsys, dir)[seq] {
					errs <- fmt.Errorf("Put of %d returned before a sync covered it", seq)
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
	if n := fsys.Syncs(); n >= writers*each {
		t.Fatalf("%d fsyncs for %d Puts: no group commit", n, writers*each)
	} else {
		t.Logf("%d Puts, %d fsyncs", writers*each, n)
	}
	// Delete never syncs and never waits for the disk.
	before := fsys.Syncs()
	for seq := uint64(1); seq <= 50; seq++ {
		s.Delete(tern.RecordPublish, uint16(seq))
	}
	if fsys.Syncs() != before {
		t.Fatal("Delete synced")
	}
}

func TestSyncPolicies(t *testing.T) {
	t.Parallel()
	for _, p := range []SyncPolicy{SyncEveryWrite, SyncInterval(time.Hour), SyncNone} {
		t.Run(p.String(), func(t *testing.T) {
			t.Parallel()
			fsys := faultfs.New(OSFS())
			s := mustOpen(t, t.TempDir(), WithFS(fsys), WithSync(p))
			for seq := uint64(1); seq <= 10; seq++ {
				mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: uint16(seq), Seq: seq, Packet: pkt(seq)})
			}
			n := fsys.Syncs()
			if (p == SyncEveryWrite) != (n >= 10) || p != SyncEveryWrite && n != 0 {
				t.Fatalf("%d syncs after 10 Puts", n)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if fsys.Syncs() == n && p != SyncEveryWrite {
				t.Fatal("Close did not sync")
			}
		})
	}
	t.Run("interval-ticks", func(t *testing.T) {
		t.Parallel()
		fsys := faultfs.New(OSFS())
		s := mustOpen(t, t.TempDir(), WithFS(fsys), WithSync(SyncInterval(time.Millisecond)))
		defer s.Close()
		mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: 1, Seq: 1, Packet: pkt(1)})
		select {
		case <-fsys.SyncNotify():
		case <-time.After(10 * time.Second):
			t.Fatal("no background sync")
		}
	})
}

func TestLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, dir)
	if _, err := Open(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	s.Close()
	s2 := mustOpen(t, dir)
	s2.Close()
}

func TestClosedAndKinds(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, t.TempDir())
	if err := s.Put(tern.StoreRecord{Kind: 0, ID: 1}); !errors.Is(err, ErrKind) {
		t.Fatalf("Put of kind 0: %v", err)
	}
	s.Close()
	for name, err := range map[string]error{
		"Put":    s.Put(tern.StoreRecord{Kind: tern.RecordPublish, ID: 1}),
		"Delete": s.Delete(tern.RecordPublish, 1),
		"Reset":  s.Reset(),
		"Close":  s.Close(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("%s after Close: %v", name, err)
		}
	}
	if _, err := s.Load(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Load after Close: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c := defaultConfig()
	if c.SegmentSize != DefaultSegmentSize || c.Sync != SyncEveryWrite || c.ttl != 0 || c.FS == nil {
		t.Fatalf("defaultConfig %+v does not match the documented defaults", c)
	}
	c.ttl = time.Hour
	if c.purgePeriod() != 10*time.Minute {
		t.Fatalf("purge period %v for a one-hour TTL", c.purgePeriod())
	}
	if !reflect.DeepEqual(SyncEveryWrite, SyncPolicy{}) {
		t.Fatal("the zero SyncPolicy is not SyncEveryWrite")
	}
}
