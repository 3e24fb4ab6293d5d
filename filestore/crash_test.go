package filestore

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/seglog/faultfs"
	"github.com/ternmq/tern/internal/seglog/segtest"
)

// syncedPuts returns the seqs of the put records in the synced prefix of every segment.
func syncedPuts(t *testing.T, fsys *faultfs.FS, dir string) map[uint64]bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	out := map[uint64]bool{}
	for _, f := range files {
		synced, ok := segtest.SyncedPrefix(fsys, f)
		if !ok {
			continue // removed meanwhile
		}
		for _, r := range segtest.ParseRecords(synced) {
			if r.Type == typePut {
				if p, err := decodePut(r.Payload); err == nil {
					out[p.seq] = true
				}
			}
		}
	}
	return out
}

func TestCorruption(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// damage harms the files and returns the seqs of the puts it destroyed.
		damage func(t *testing.T, files []string, puts [][]segtest.Record) []uint64
	}{
		{"truncated last record", func(t *testing.T, files []string, puts [][]segtest.Record) []uint64 {
			last := len(files) - 1
			r := puts[last][len(puts[last])-1]
			os.Truncate(files[last], r.Off+15)
			return seqsIn(puts[last][len(puts[last])-1:])
		}},
		{"flipped bits mid-file", func(t *testing.T, files []string, puts [][]segtest.Record) []uint64 {
			b, _ := os.ReadFile(files[1])
			b[puts[1][2].Off+20] ^= 0x81
			os.WriteFile(files[1], b, 0o644)
			return seqsIn(puts[1][2:3])
		}},
		{"zero-length segment", func(t *testing.T, files []string, puts [][]segtest.Record) []uint64 {
			os.Truncate(files[2], 0)
			return seqsIn(puts[2])
		}},
		{"missing segment", func(t *testing.T, files []string, puts [][]segtest.Record) []uint64 {
			os.Remove(files[1])
			return seqsIn(puts[1])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := mustOpen(t, dir, WithSegmentSize(1<<10))
			for seq := uint64(1); seq <= 80; seq++ {
				mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: uint16(seq), Seq: seq, Packet: pkt(seq), Time: t0})
			}
			before := mustLoad(t, s)
			s.Close()
			files, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
			slices.Sort(files)
			var puts [][]segtest.Record
			for _, f := range files {
				b, _ := os.ReadFile(f)
				puts = append(puts, segtest.ParseRecords(b))
			}
			if len(files) < 4 {
				t.Fatalf("only %d segments", len(files))
			}
			lost := tt.damage(t, files, puts)
			want := slices.DeleteFunc(before, func(r tern.StoreRecord) bool { return slices.Contains(lost, r.Seq) })

			var mu sync.Mutex
			var reports []Corruption
			done := make(chan *Store, 1)
			go func() {
				s, err := Open(dir, WithSegmentSize(1<<10), WithCorruptionHandler(func(c Corruption) {
					mu.Lock()
					reports = append(reports, c)
					mu.Unlock()
				}))
				if err != nil {
					t.Error(err)
				}
				done <- s
			}()
			select {
			case s = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Open still running after 20s")
			}
			if s == nil {
				return
			}
			defer s.Close()
			mu.Lock()
			if len(reports) == 0 {
				t.Error("the damage was not reported")
			}
			mu.Unlock()
			if got := mustLoad(t, s); !sameRecords(got, want) {
				t.Fatalf("after damage: %d records, want %d", len(got), len(want))
			}
		})
	}
}

func seqsIn(rs []segtest.Record) []uint64 {
	var out []uint64
	for _, r := range rs {
		if p, err := decodePut(r.Payload); err == nil {
			out = append(out, p.seq)
		}
	}
	return out
}

func TestInjectedFailures(t *testing.T) {
	t.Parallel()
	for _, op := range []faultfs.Op{faultfs.OpWrite, faultfs.OpSync} {
		t.Run(op.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fsys := faultfs.New(OSFS())
			s := mustOpen(t, dir, WithFS(fsys))
			for seq := uint64(1); seq <= 5; seq++ {
				mustPut(t, s, tern.StoreRecord{Kind: tern.RecordPublish, ID: uint16(seq), Seq: seq, Packet: pkt(seq), Time: t0})
			}
			want := mustLoad(t, s)
			boom := errors.New("injected I/O error")
			segtest.FailOn(fsys, op, boom)
			err := s.Put(tern.StoreRecord{Kind: tern.RecordPublish, ID: 99, Seq: 99, Packet: pkt(99), Time: t0})
			if !errors.Is(err, boom) {
				t.Fatalf("Put with a failing %v: %v", op, err)
			}
			fsys.SetFault(nil)
			if err := s.Put(tern.StoreRecord{Kind: tern.RecordPublish, ID: 100, Seq: 100, Time: t0}); err == nil {
				t.Fatal("Put succeeded after a failure")
			}
			s.Close()
			s = mustOpen(t, dir)
			defer s.Close()
			got := mustLoad(t, s)
			if len(got) < len(want) || !sameRecords(got[:len(want)], want) || len(got) > len(want)+1 {
				t.Fatalf("after reopen: %+v, want %+v (+ maybe the failed one)", got, want)
			}
		})
	}
}

func TestSimulatedPowerLoss(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fsys := faultfs.New(OSFS())
	s := mustOpen(t, dir, WithFS(fsys), WithSegmentSize(2<<10))
	need := segtest.CrashDuring(t, fsys, 8, 200, func(g, i int) (uint64, error) {
		seq := uint64(g*100_000 + i + 1)
		return seq, s.Put(tern.StoreRecord{Kind: tern.RecordPublish, ID: uint16(g*1000 + i%1000), Seq: seq, Packet: pkt(seq), Time: t0})
	})
	s.Close()
	s = mustOpen(t, dir)
	defer s.Close()
	got := map[uint64]bool{}
	for _, r := range mustLoad(t, s) {
		got[r.Seq] = true
	}
	for _, seq := range need {
		if !got[seq] {
			t.Fatalf("record %d: Put returned, but it is gone after the crash", seq)
		}
	}
}

const (
	runEnv = "TERN_FILESTORE_CHILD_RUN"
	ring   = 50 // packet ids per child goroutine
)

// childOp is step k of goroutine g of the child in a given run: in turn, publish a new
// message, release the one published 10 messages ago (PUBREC), complete the one published 20
// ago (PUBCOMP). About 20 records per goroutine stay live. op "n" does nothing.
func childOp(g int, run uint64, k int) (op string, id uint16, seq uint64) {
	i := k / 3
	back := []int{0, 10, 20}[k%3]
	if i < back {
		return "n", 0, 0
	}
	j := i - back
	return []string{"p", "r", "d"}[k%3], uint16(g*ring + j%ring + 1), run<<32 | uint64(j+1)
}

// TestHelperChild is the process the kill -9 test kills. Four goroutines run childOp steps,
// printing "K G" after each step returned. Small segments and an eager compaction
// threshold make compactions frequent, so kills land in them too.
func TestHelperChild(t *testing.T) {
	dir := segtest.ChildDir()
	if dir == "" {
		t.Skip("only runs as the child of TestKill9")
	}
	run, _ := strconv.ParseUint(os.Getenv(runEnv), 10, 32)
	s, err := Open(dir, WithSegmentSize(4<<10), func(c *config) { c.compactMin = 2 << 10 })
	if err != nil {
		fmt.Println("open error:", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	for g := range 4 {
		go func() {
			for k := 0; ; k++ {
				op, id, seq := childOp(g, run, k)
				var err error
				switch op {
				case "p":
					err = s.Put(tern.StoreRecord{Kind: tern.RecordPublish, ID: id, Seq: seq, Packet: pkt(seq), Time: t0})
				case "r":
					err = s.Put(tern.StoreRecord{Kind: tern.RecordReleased, ID: id, Time: t0})
				case "d":
					err = s.Delete(tern.RecordReleased, id)
				}
				if err != nil {
					fmt.Println(op, "error:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(out, "%d %d\n", k, g)
				out.Flush() // one write per line: what is printed was done
				mu.Unlock()
			}
		}()
	}
	select {} // until SIGKILL
}

// state is what the model expects of one packet id.
type state struct {
	kind tern.RecordKind // 0: absent
	seq  uint64
}

func apply(m map[uint16]state, op string, id uint16, seq uint64) {
	switch op {
	case "p":
		m[id] = state{tern.RecordPublish, seq}
	case "r":
		m[id] = state{tern.RecordReleased, seq}
	case "d":
		m[id] = state{0, seq}
	}
}

// TestKill9 kills the child at random moments and checks, after each kill, that Load
// returns exactly what the child was told was stored, allowing only what the contract
// allows: the one step per goroutine that may have happened after its last line, and a
// deletion that did not reach the disk.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test skipped in -short mode")
	}
	// Not parallel: while os/exec forks, the child holds a copy of every descriptor of
	// this process until it execs, LOCK files of other tests' queues included, so their
	// reopen could briefly see the directory locked.
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	model := map[uint16]state{}
	deadline := time.Now().Add(2 * time.Minute)
	for run := uint64(1); run <= 6; run++ {
		if time.Now().After(deadline) {
			t.Fatalf("out of time after %d runs", run-1)
		}
		lines := segtest.KillChild(t, dir, []string{runEnv + "=" + strconv.FormatUint(run, 10)},
			100+rng.IntN(900), func(ln string) bool {
				_, _, ok := strings.Cut(ln, " ")
				return ok && ln[0] >= '0' && ln[0] <= '9'
			})
		lastK := map[int]int{}
		for _, ln := range lines {
			var k, g int
			if _, err := fmt.Sscanf(ln, "%d %d", &k, &g); err != nil {
				t.Fatalf("child said %q", ln)
			}
			op, id, seq := childOp(g, run, k)
			apply(model, op, id, seq)
			lastK[g] = k
		}
		// What each goroutine may have done after its last line.
		extra := map[uint16]state{}
		for g := range 4 {
			k, ok := lastK[g]
			if !ok {
				k = -1
			}
			op, id, seq := childOp(g, run, k+1)
			if op != "n" {
				extra[id] = model[id]
				apply(extra, op, id, seq)
			}
		}
		s := mustOpen(t, dir)
		recs := mustLoad(t, s)
		s.Close()
		got := map[uint16]state{}
		var lastSeq uint64
		for _, r := range recs {
			if r.Seq < lastSeq {
				t.Fatalf("run %d: Load not in Seq order", run)
			}
			lastSeq = r.Seq
			got[r.ID] = state{r.Kind, r.Seq}
			if r.Kind == tern.RecordPublish && string(r.Packet) != string(pkt(r.Seq)) {
				t.Fatalf("run %d: id %d: packet %q for seq %d", run, r.ID, r.Packet, r.Seq)
			}
		}
		ids := map[uint16]bool{}
		for _, m := range []map[uint16]state{model, got, extra} {
			for id := range m {
				ids[id] = true
			}
		}
		for id := range ids {
			have, want := got[id], model[id]
			x, hasExtra := extra[id]
			ok := allowed(have, want) || hasExtra && allowed(have, x)
			if !ok {
				t.Fatalf("run %d: id %d: stored %+v, child said %+v (may also be %+v)", run, id, have, want, extra[id])
			}
			model[id] = have // what is on disk is where the next run starts
		}
		t.Logf("run %d: %d steps reported, %d live records", run, len(lines), len(recs))
	}
}

// allowed reports whether the stored state of an id is one the child's word allows. A
// deletion may not have reached the disk: the released record it deleted may remain.
func allowed(have, want state) bool {
	if want.kind == 0 {
		return have.kind == 0 || want.seq != 0 && have == state{tern.RecordReleased, want.seq}
	}
	return have == want
}
