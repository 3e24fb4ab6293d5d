// Package segtest holds the test helpers that the packages built on seglog (filequeue,
// filestore) share: an independent reader of segment files, a goroutine-leak check for
// TestMain, fault and power-loss drivers over faultfs, and the parent side of the kill -9
// tests. It is imported by tests only.
package segtest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/seglog/faultfs"
)

// Record is one record found by ParseRecords: where it starts, its type byte and payload.
type Record struct {
	Off     int64
	Type    byte
	Payload []byte
}

// ParseRecords reads the well-formed records at the start of a segment's bytes. It is the
// tests' own reader of the layout [len u32][crc32c u32][version][type][payload],
// independent of seglog's, so a bug there cannot hide itself; it stops at the first record
// whose length does not fit and does not check CRCs.
func ParseRecords(b []byte) []Record {
	var out []Record
	for off := 0; off+10 <= len(b); {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if n < 2 || off+8+n > len(b) {
			break
		}
		out = append(out, Record{Off: int64(off), Type: b[off+9], Payload: b[off+10 : off+8+n]})
		off += 8 + n
	}
	return out
}

// ReadFile returns the contents of path, failing the test if it cannot be read.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// SyncedPrefix returns the bytes of path that fsys has synced (all of them when fsys has
// no record of the file), and false when the file is gone.
func SyncedPrefix(fsys *faultfs.FS, path string) ([]byte, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	n := fsys.SyncedSize(path)
	if n < 0 {
		n = int64(len(data))
	}
	return data[:min(n, int64(len(data)))], true
}

// Main runs the tests, then fails the run if a goroutine whose stack mentions one of
// markers (such as "/filequeue.") is still running 5 seconds later. Call it from TestMain.
// A child process of the kill -9 tests never gets here: it is killed.
func Main(m *testing.M, markers ...string) {
	code := m.Run()
	if code == 0 {
		if left := LeftGoroutines(5*time.Second, markers...); left != "" {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n%s\n", left)
			code = 1
		}
	}
	os.Exit(code)
}

// LeftGoroutines polls until no goroutine mentioning one of markers runs, or limit passes,
// and returns the stacks of those still running.
func LeftGoroutines(limit time.Duration, markers ...string) string {
	deadline := time.Now().Add(limit)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if mentions(g, markers) && !strings.Contains(g, "TestMain") &&
				!strings.Contains(g, "LeftGoroutines") && !strings.Contains(g, "testing.tRunner") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

func mentions(stack string, markers []string) bool {
	for _, m := range markers {
		if strings.Contains(stack, m) {
			return true
		}
	}
	return false
}

// FailOn makes every operation op on fsys fail with err until the fault is cleared with
// fsys.SetFault(nil).
func FailOn(fsys *faultfs.FS, op faultfs.Op, err error) {
	fsys.SetFault(func(o faultfs.Op, _ string) error {
		if o == op {
			return err
		}
		return nil
	})
}

// CrashDuring runs write(g, i) for i = 0, 1, ... on each of producers goroutines until it
// fails. Once n calls have returned without error it simulates a power loss on fsys,
// waits for every producer to see its write fail, and returns the values of the calls that
// had returned before the crash: each of them must survive it.
func CrashDuring(t testing.TB, fsys *faultfs.FS, producers, n int, write func(g, i int) (uint64, error)) []uint64 {
	t.Helper()
	var (
		mu       sync.Mutex
		returned []uint64
		wg       sync.WaitGroup
	)
	crashAt := make(chan struct{})
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				v, err := write(g, i)
				if err != nil {
					return // the crash
				}
				mu.Lock()
				returned = append(returned, v)
				if len(returned) == n {
					close(crashAt)
				}
				mu.Unlock()
			}
		}()
	}
	<-crashAt
	mu.Lock()
	err := fsys.Crash()
	need := append([]uint64(nil), returned...)
	mu.Unlock()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return need
}

// ChildEnvDir names the environment variable that tells a test binary it is the child of a
// kill -9 test, and which directory to write to.
const ChildEnvDir = "TERN_SEGTEST_CHILD_DIR"

// ChildDir returns the directory a kill -9 child works in, or "" in a normal test run
// (the caller then skips).
func ChildDir() string { return os.Getenv(ChildEnvDir) }

// KillChild runs this test binary's TestHelperChild with dir and the extra environment
// env, SIGKILLs it once it has printed n lines and returns every line it printed. A line
// that ok refuses is the child's error message and fails the test. A child stuck for a
// minute is killed and the test fails.
func KillChild(t testing.TB, dir string, env []string, n int, ok func(line string) bool) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChild$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), ChildEnvDir+"="+dir), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() }) // a stuck child
	defer timer.Stop()
	sc := bufio.NewScanner(stdout)
	var lines []string
	for sc.Scan() {
		ln := sc.Text()
		if !ok(ln) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %s", ln)
		}
		lines = append(lines, ln)
		if len(lines) == n {
			cmd.Process.Kill() // SIGKILL: no deferred code, no Close
		}
	}
	cmd.Wait()
	if len(lines) < n {
		t.Fatalf("child died after %d lines, before the kill", len(lines))
	}
	return lines
}
