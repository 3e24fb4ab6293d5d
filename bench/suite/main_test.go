package suite

import (
	"fmt"
	"os"
	"runtime"
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
			os.Exit(0)
		}
	}
	code := m.Run()
	if code == 0 {
		if leaked := waitGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func waitGoroutines(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		stacks := ourGoroutines()
		if stacks == "" || time.Now().After(deadline) {
			return stacks
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

func ourGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if (strings.Contains(g, "ternmq/tern") || strings.Contains(g, "mochi-mqtt")) &&
			!strings.Contains(g, "TestMain") && !strings.Contains(g, "testing.tRunner") &&
			!strings.Contains(g, "waitGoroutines") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
