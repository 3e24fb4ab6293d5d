// Package leakcheck fails a test binary whose goroutines outlive its tests.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests and exits; if they pass, it waits up to five seconds for every
// goroutine running code of the given packages (import path fragments) to end, and fails
// the run with their stacks if some are left.
func Main(m *testing.M, packages ...string) {
	code := m.Run()
	if code == 0 {
		if left := wait(5*time.Second, packages); left != "" {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n%s\n", left)
			code = 1
		}
	}
	os.Exit(code)
}

func wait(limit time.Duration, packages []string) string {
	deadline := time.Now().Add(limit)
	for {
		left := running(packages)
		if left == "" || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

func running(packages []string) string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "leakcheck.") || strings.Contains(g, "testing.(*M).Run") {
			continue
		}
		for _, p := range packages {
			if strings.Contains(g, p) {
				out = append(out, g)
				break
			}
		}
	}
	return strings.Join(out, "\n\n")
}
