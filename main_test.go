package tern

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/brokertest"
)

// TestMain starts the broker the examples share, and fails the run if any goroutine
// started by the package outlives the tests.
func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "tern-examples-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	broker, err := brokertest.Start(brokertest.Config{Dir: dir})
	switch {
	case err == nil:
		// The examples read the broker from the environment, as a program would.
		os.Setenv("MQTT_BROKER", broker.URL)
	case strings.EqualFold(os.Getenv("CI"), "true"):
		fmt.Fprintln(os.Stderr, "CI=true and the examples' broker did not start:", err)
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "SKIPPING the Example functions: no broker:", err)
		flag.Set("test.skip", "^Example")
		// Counted in test.sh's closing summary, like every test that skips for want of a broker.
		brokertest.NoteSkip("Example functions of package tern")
	}
	code := m.Run()
	if broker != nil {
		broker.Stop()
	}
	os.RemoveAll(dir)
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
