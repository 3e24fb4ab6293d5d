package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain runs the program itself when the test re-executes its own binary with
// DURABLEQUEUE_MAIN=1, so its handling of the command line is tested as a user meets it.
func TestMain(m *testing.M) {
	if os.Getenv("DURABLEQUEUE_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A negative -n is a usage error named by the flag package, never a panic (it was
// "makeslice: cap out of range"). Nothing is dialled: the flags are checked first.
func TestNegativeCountIsAUsageError(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-n", "-1", "-dir", t.TempDir(), "-broker", "mqtt://127.0.0.1:1")
	cmd.Env = append(os.Environ(), "DURABLEQUEUE_MAIN=1")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || strings.Contains(string(out), "panic:") || !strings.Contains(string(out), "invalid value") {
		t.Fatalf("want exit status 2 with a usage message; got %v:\n%s", err, out)
	}
}
