package filequeue

import (
	"testing"

	"github.com/ternmq/tern/internal/seglog/segtest"
)

// TestMain fails the run if a goroutine of this package or of its log outlives the tests.
func TestMain(m *testing.M) { segtest.Main(m, "/filequeue.", "/seglog.") }
