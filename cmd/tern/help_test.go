package main

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"
)

// "tern help pub" and "tern help sub" list every flag the command accepts, each under
// its short and long names, with its default where it has one.
func TestHelpListsEveryFlagWithDefaults(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flags    func(io.Writer) *cliFlags
		defaults map[string]string // flag -> default shown
	}{
		{"pub", func(w io.Writer) *cliFlags { c, _ := newPubFlags(w); return c }, map[string]string{
			"--repeat N": "1", "--drain-timeout DURATION": "30s", "-k, --keepalive SECONDS": "60",
			"--connect-timeout DURATION": "10s", "-V, --protocol-version VERSION": "5"}},
		{"sub", func(w io.Writer) *cliFlags { c, _ := newSubFlags(w); return c }, map[string]string{
			"--max-packet-size BYTES": "1048576", "-k, --keepalive SECONDS": "60",
			"--connect-timeout DURATION": "10s"}},
	} {
		var stdout, stderr bytes.Buffer
		if st := dispatch([]string{"help", tc.name}, &stdout, &stderr); st != 0 || stderr.Len() != 0 {
			t.Fatalf("help %s: status %d, stderr %q", tc.name, st, stderr.String())
		}
		help := stdout.String()
		entries := map[string]string{} // "  -t, --topic TOPIC" line -> its description
		lines := strings.Split(help, "\n")
		for i := 0; i+1 < len(lines); i++ {
			if strings.HasPrefix(lines[i], "  -") && strings.HasPrefix(lines[i+1], "      ") {
				entries[strings.TrimSpace(lines[i])] = lines[i+1]
			}
		}
		c := tc.flags(io.Discard)
		c.fs.VisitAll(func(f *flag.Flag) {
			dash := "--"
			if len(f.Name) == 1 {
				dash = "-"
			}
			found := false
			for head := range entries {
				for _, word := range strings.Fields(strings.ReplaceAll(head, ",", "")) {
					if word == dash+f.Name {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("help %s does not list %s%s", tc.name, dash, f.Name)
			}
		})
		for head, def := range tc.defaults {
			if d, ok := entries[head]; !ok || !strings.Contains(d, "(default "+def+")") {
				t.Errorf("help %s: %q: %q; want (default %s)", tc.name, head, d, def)
			}
		}
		for _, s := range c.specs {
			if s.def != "" && s.def != "0" && !strings.Contains(help, "(default "+s.def+")") {
				t.Errorf("help %s: default %q of %v not shown", tc.name, s.def, s.names)
			}
		}
	}
}
