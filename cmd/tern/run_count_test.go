package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// expect with count: 0 asserts that nothing comes within the window, as `none` does: it must
// watch the whole window, not pass at once because zero messages are "reached" before the
// first one arrives (here the second message comes 200ms into the window). Promise: an expectation never passes empty by not waiting.
func TestRunExpectCountZeroWatchesWindow(t *testing.T) {
	file := filepath.Join(t.TempDir(), "zero.yml")
	os.WriteFile(file, []byte(`name: count zero
clients:
  c: {}
steps:
  - subscribe: {client: c, filters: ["zero/#"], qos: 1}
  - connect: c
  - parallel:
      - expect: {on: zero/#, count: 0, within: 3s}
      - publish: {client: c, topic: zero/a, payload: "p{{.seq}}", qos: 1, repeat: 2, interval: 200ms}
`), 0o644)
	out, errs, st := runScenarios(t, file)
	if st != 1 || !strings.Contains(out, `wanted 0 messages, got 2: 2 extra (zero/a "p1", zero/a "p2")`) {
		t.Fatalf("status %d, want 1 and the late message reported\n%s%s", st, out, errs)
	}
}

// With only max, expect watches the whole window (README): a message past the maximum that
// comes late in the window fails the step. Promise: an expectation never passes by not waiting.
func TestRunExpectMaxWatchesWindow(t *testing.T) {
	file := filepath.Join(t.TempDir(), "max.yml")
	os.WriteFile(file, []byte(`name: at most one
clients:
  c: {}
steps:
  - subscribe: {client: c, filters: ["max/#"], qos: 1}
  - connect: c
  - parallel:
      - expect: {on: max/#, max: 1, within: 3s}
      - publish: {client: c, topic: max/a, payload: "p{{.seq}}", qos: 1, repeat: 2, interval: 200ms}
`), 0o644)
	out, errs, st := runScenarios(t, file)
	if st != 1 || !strings.Contains(out, `wanted at most 1 message, got 2: 1 extra (max/a "p2")`) {
		t.Fatalf("status %d, want 1 and the late message reported\n%s%s", st, out, errs)
	}
}
