package durable_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/durable"
	"github.com/ternmq/tern/filequeue"
	"github.com/ternmq/tern/filestore"
)

// One policy value configures both durable packages: they alias the same type, so a policy
// parsed once (from a flag, say) needs no conversion.
func TestOnePolicyForBothPackages(t *testing.T) {
	for _, p := range []durable.SyncPolicy{
		durable.SyncEveryWrite, filequeue.SyncNone, filestore.SyncInterval(time.Second),
	} {
		q, err := filequeue.Open(t.TempDir(), filequeue.WithSync(p))
		if err != nil {
			t.Fatalf("filequeue %v: %v", p, err)
		}
		q.Close()
		s, err := filestore.Open(t.TempDir(), filestore.WithSync(p))
		if err != nil {
			t.Fatalf("filestore %v: %v", p, err)
		}
		s.Close()
	}
}

func TestSyncPolicyNamesAndChecks(t *testing.T) {
	for _, tc := range []struct {
		p    durable.SyncPolicy
		name string
	}{
		{durable.SyncPolicy{}, "every-write"},
		{durable.SyncNone, "none"},
		{durable.SyncInterval(250 * time.Millisecond), "interval(250ms)"},
	} {
		if got := tc.p.String(); got != tc.name {
			t.Errorf("String() = %q, want %q", got, tc.name)
		}
	}
	if d, ok := durable.SyncInterval(time.Second).Interval(); !ok || d != time.Second {
		t.Errorf("Interval() = %v, %v", d, ok)
	}
	if _, ok := durable.SyncNone.Interval(); ok || durable.SyncNone.EveryWrite() {
		t.Error("SyncNone reports an interval or every-write")
	}
	// A non-positive interval is refused by Open in both packages, never treated as "none".
	_, err := filequeue.Open(t.TempDir(), filequeue.WithSync(durable.SyncInterval(0)))
	if err == nil || !strings.Contains(err.Error(), "interval") {
		t.Errorf("filequeue accepted SyncInterval(0): %v", err)
	}
	_, err = filestore.Open(t.TempDir(), filestore.WithSync(durable.SyncInterval(-time.Second)))
	if err == nil || !strings.Contains(err.Error(), "interval") {
		t.Errorf("filestore accepted a negative interval: %v", err)
	}
}
