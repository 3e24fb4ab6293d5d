package tern

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if any goroutine started by the package outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// waitGoroutines polls until no goroutine of this package is running, or the deadline passes
// and returns their stacks.
func waitGoroutines(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		stacks := packageGoroutines()
		if stacks == "" || time.Now().After(deadline) {
			return stacks
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline, not synchronising
	}
}

func packageGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "ternmq/tern.") && !strings.Contains(g, "TestMain") &&
			!strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "waitGoroutines") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
