package tern

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
	"time"
)

// The defaults written in the option docs must be the ones defaultConfig uses.
func TestDocumentedDefaults(t *testing.T) {
	cfg := defaultConfig()
	want := map[string]string{
		"WithKeepAlive":                 "Default: " + secs(cfg.keepAlive),
		"WithPingTimeout":               "Default: " + secs(cfg.pingTimeout),
		"WithConnectTimeout":            "Default: " + secs(cfg.connectTimeout),
		"WithReceiveMaximum":            "Default: " + itoa(int(cfg.receiveMax)),
		"WithMaxSubscribeQueueSize":     "Default: " + itoa(cfg.subBuffer),
		"WithWriteBuffer":               "Default: " + itoa(cfg.writeBufMax>>20) + " MiB",
		"WithMaximumPacketSize":         "Default: " + itoa(int(cfg.maxPacketSize>>20)) + " MiB",
		"WithDisconnectFlushTimeout":    "Default: " + secs(cfg.flushTimeout),
		"WithCleanStart":                "Default: true",
		"WithRequestProblemInformation": "Default: true",
		"WithDropPolicy":                "Default: " + titled(cfg.dropPolicy.String()),
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "options.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || want[fn.Name.Name] == "" {
			continue
		}
		found++
		doc := strings.Join(strings.Fields(fn.Doc.Text()), " ")
		if !strings.Contains(doc, want[fn.Name.Name]) {
			t.Errorf("%s: doc %q does not say %q", fn.Name.Name, doc, want[fn.Name.Name])
		}
	}
	if found != len(want) {
		t.Fatalf("found %d of %d options", found, len(want))
	}
}

func secs(d time.Duration) string { return itoa(int(d/time.Second)) + " s" }

func itoa(n int) string {
	s := ""
	if n == 0 {
		return "0"
	}
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func titled(s string) string { return strings.ToUpper(s[:1]) + s[1:] }
