package tern_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// crashChild is a child process of this test binary running test run (a "...Child" test
// selected by its environment), with its stdout read line by line for the protocol lines
// that start with prefix. Its stdin stays open: a child that waits on it lives until killed.
type crashChild struct {
	t      *testing.T
	cmd    *exec.Cmd
	sc     *bufio.Scanner
	stderr *strings.Builder
	prefix string
}

func startCrashChild(t *testing.T, ctx context.Context, run, prefix string, env ...string) *crashChild {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+run+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &crashChild{t: t, cmd: cmd, sc: bufio.NewScanner(out), stderr: stderr, prefix: prefix + " "}
}

// next returns the child's next protocol line, skipping test output.
func (c *crashChild) next() string {
	c.t.Helper()
	for c.sc.Scan() {
		if line, ok := strings.CutPrefix(c.sc.Text(), c.prefix); ok {
			return line
		}
	}
	c.t.Fatalf("child ended early: %v\n%s", c.sc.Err(), c.stderr)
	return ""
}
