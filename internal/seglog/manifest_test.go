package seglog_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ternmq/tern/internal/seglog"
)

// fill writes 25 records, five per segment, and closes the log.
func fill(t *testing.T, dir string, o seglog.Options) {
	t.Helper()
	l, _ := mustOpen(t, dir, o)
	for i := range 25 {
		appendAll(t, l, 1, fmt.Sprintf("record-%04d", i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestManifestMissingEnds: with a manifest, a segment missing at the front or the end of
// the log is reported, once; segments removed by RemoveThrough are not, and the caller's
// value survives. [promise: a durable queue never loses entries unseen]
func TestManifestMissingEnds(t *testing.T) {
	t.Parallel()
	o := seglog.Options{SegmentSize: 5 * recSize, Manifest: true}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string, files []string)
		want   string // in the reports; "" for none
		gaps   []seglog.Span
	}{
		{"intact", func(*testing.T, string, []string) {}, "", nil},
		{"first removed", func(t *testing.T, _ string, f []string) { os.Remove(f[0]) },
			"segments 1 to 1 missing at the front", []seglog.Span{{First: 1, Last: 1}}},
		{"two last removed", func(t *testing.T, _ string, f []string) { os.Remove(f[3]); os.Remove(f[4]) },
			"segments 4 to 5 missing at the end", []seglog.Span{{First: 4, Last: 5}}},
		{"all removed", func(t *testing.T, _ string, f []string) {
			for _, p := range f {
				os.Remove(p)
			}
		}, "segments 1 to 5 missing", []seglog.Span{{First: 1, Last: 5}}},
		{"manifest damaged", func(t *testing.T, dir string, _ []string) {
			p := filepath.Join(dir, "MANIFEST")
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 1
			os.WriteFile(p, b, 0o644)
		}, "manifest ignored: checksum mismatch", nil},
		{"removed through 2 by the log", func(t *testing.T, dir string, _ []string) {
			l, _ := mustOpen(t, dir, o)
			if n, err := l.RemoveThrough(2, []byte("meta-2")); n != 2 || err != nil {
				t.Fatalf("RemoveThrough: %d, %v", n, err)
			}
			l.Close()
		}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fill(t, dir, o)
			l, _ := mustOpen(t, dir, o)
			if err := l.SetMeta([]byte("meta-1")); err != nil {
				t.Fatal(err)
			}
			l.Close()
			tt.damage(t, dir, segFiles(t, dir))
			l, c := mustOpen(t, dir, o)
			r := c.reasons()
			if tt.want == "" && r != "" || !strings.Contains(r, tt.want) {
				l.Close()
				t.Fatalf("reports %q, want %q", r, tt.want)
			}
			if !slices.Equal(l.Gaps(), tt.gaps) {
				t.Errorf("Gaps() = %v, want %v", l.Gaps(), tt.gaps)
			}
			wantMeta := "meta-1"
			switch tt.name {
			case "removed through 2 by the log":
				wantMeta = "meta-2"
			case "manifest damaged":
				wantMeta = ""
			}
			if string(l.Meta()) != wantMeta {
				t.Errorf("Meta() = %q, want %q", l.Meta(), wantMeta)
			}
			appendAll(t, l, 1, "after")
			l.Close()
			l, c = mustOpen(t, dir, o)
			defer l.Close()
			if r := c.reasons(); r != "" {
				t.Fatalf("reported again at the next Open: %s", r)
			}
		})
	}
}

// TestManifestIgnoresSubdirectories: directories inside the log's, another log's or the
// caller's, are neither segments nor leftovers to remove.
func TestManifestIgnoresSubdirectories(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o := seglog.Options{SegmentSize: 5 * recSize, Manifest: true}
	fill(t, dir, o)
	for _, d := range []string{"dead", "x.tmp", "00000000000000000099.seg"} {
		if err := os.MkdirAll(filepath.Join(dir, d, "inner"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, c := mustOpen(t, dir, o)
	defer l.Close()
	if r := c.reasons(); r != "" {
		t.Fatalf("reports: %s", r)
	}
	if len(c.recs) != 25 {
		t.Fatalf("replayed %d records, want 25", len(c.recs))
	}
	for _, d := range []string{"dead", "x.tmp", "00000000000000000099.seg"} {
		if _, err := os.Stat(filepath.Join(dir, d, "inner")); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
	}
}
