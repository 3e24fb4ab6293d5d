package filestore

import (
	"errors"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog/faultfs"
)

// PutAsync records added while a sync is held share the syncs that follow; each done comes
// once, in order, only after its record is durable: a simulated machine crash right after
// keeps every record reported. Promise: "done(nil) means durable".
func TestPutAsyncGroupCommit(t *testing.T) {
	dir := t.TempDir()
	ffs := faultfs.New(OSFS())
	s := mustOpen(t, dir, WithFS(ffs))
	release := make(chan struct{})
	ffs.SetFault(func(op faultfs.Op, path string) error {
		if op == faultfs.OpSync {
			<-release
		}
		return nil
	})
	const n = 100
	got := make(chan int, n)
	for i := range n {
		s.PutAsync(tern.StoreRecord{Kind: tern.RecordInbound, ID: uint16(i + 1)}, func(err error) {
			if err != nil {
				t.Errorf("record %d: %v", i, err)
			}
			got <- i
		})
	}
	select {
	case i := <-got:
		t.Fatalf("record %d reported before any sync finished", i)
	default:
	}
	before := ffs.Syncs()
	close(release)
	for want := range n {
		if i := <-got; i != want {
			t.Fatalf("done for record %d, want %d (PutAsync order)", i, want)
		}
	}
	// One sync may have started with the first record alone; the rest share the next.
	if syncs := ffs.Syncs() - before; syncs > 2 {
		t.Errorf("%d syncs for %d records added during one sync, want at most 2", syncs, n)
	}
	if err := ffs.Crash(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := mustOpen(t, dir)
	defer s2.Close()
	if recs := mustLoad(t, s2); len(recs) != n {
		t.Fatalf("%d records after the crash, want %d", len(recs), n)
	}
}

// A failed sync is reported to every record it covered, and to records added after it
// before PutAsync returns; Close settles what is pending. Promise: "a failed sync never
// reads as durable".
func TestPutAsyncFailure(t *testing.T) {
	ffs := faultfs.New(OSFS())
	s := mustOpen(t, t.TempDir(), WithFS(ffs))
	errDisk := errors.New("disk on fire")
	ffs.SetFault(func(op faultfs.Op, path string) error {
		if op == faultfs.OpSync {
			return errDisk
		}
		return nil
	})
	errs := make(chan error, 2)
	s.PutAsync(tern.StoreRecord{Kind: tern.RecordInbound, ID: 1}, func(err error) { errs <- err })
	if err := <-errs; !errors.Is(err, errDisk) {
		t.Fatalf("first record: %v, want the sync error", err)
	}
	s.PutAsync(tern.StoreRecord{Kind: tern.RecordInbound, ID: 2}, func(err error) { errs <- err })
	if err := <-errs; err == nil {
		t.Fatal("record added to a failed log reported durable")
	}
	s.Close()
	s.PutAsync(tern.StoreRecord{Kind: tern.RecordInbound, ID: 3}, func(err error) { errs <- err })
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}
