package seglog_test

import (
	"testing"
	"time"

	"github.com/ternmq/tern/internal/seglog/segtest"
)

// TestMain fails the run if a goroutine of this package outlives the tests.
func TestMain(m *testing.M) { segtest.Main(m, "internal/seglog.") }

// within runs fn and fails the test if it has not returned after d: corruption handling
// must never spin.
func within(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %v", d)
	}
}
