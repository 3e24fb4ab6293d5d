package adapters

import (
	"errors"
	"testing"
)

// TestWSOnlyTern: only tern has a WebSocket transport in the adapters; the others refuse a
// WebSocket row as unavailable (skipped by the suite) instead of dialling TCP to a
// WebSocket listener.
func TestWSOnlyTern(t *testing.T) {
	for _, lib := range libs() {
		c, err := New(lib, Config{Addr: "127.0.0.1:1", WS: true})
		if lib == "tern" {
			if err != nil || c == nil {
				t.Errorf("tern over WebSocket: %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s over WebSocket: err %v, want ErrUnavailable", lib, err)
		}
	}
}
