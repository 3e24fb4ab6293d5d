package suite

import (
	"fmt"
	"github.com/ternmq/tern/internal/seglog/segtest"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the suite's child process (the suite starts
// os.Executable with -child JOB), and fails the run if a goroutine of the suite or of the
// embedded broker outlives the tests.
func TestMain(m *testing.M) {
	for i, a := range os.Args {
		if a == "-"+ChildFlag && i+1 < len(os.Args) {
			if err := RunChild(os.Args[i+1], os.Stdin, os.Stdout); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			// TestChildExitStatus: a child that reports its result and then fails on exit,
			// as one does when the race detector reports at exit.
			if os.Getenv(failAtExitEnv) != "" {
				fmt.Fprintln(os.Stderr, "failing at exit as asked")
				os.Exit(66)
			}
			os.Exit(0)
		}
	}
	// A race-enabled binary sleeps a second at exit by default (atexit_sleep_ms); every child
	// process of the tests is this binary, so without this each job would cost that second.
	if g := os.Getenv("GORACE"); !strings.Contains(g, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(g+" atexit_sleep_ms=0"))
	}
	code := m.Run()
	if code == 0 {
		if leaked := segtest.LeftGoroutines(5*time.Second, "ternmq/tern", "mochi-mqtt"); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}
