package tern

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The defaults written in the option docs must be the ones defaultConfig uses.
func TestDocumentedDefaults(t *testing.T) {
	cfg := defaultConfig()
	qcfg := defaultQueueConfig()
	poolRouting := map[PoolRouting]string{PoolRoundRobin: "PoolRoundRobin",
		PoolHashByTopic: "PoolHashByTopic", PoolLeastInFlight: "PoolLeastInFlight"}
	overflow := map[WriteOverflowPolicy]string{WriteBlock: "WriteBlock", WriteFailFast: "WriteFailFast"}
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
		"WithPublisherPool":             "Default: " + itoa(cfg.poolSize) + ", no pool",
		"WithPublisherPoolRouting":      "Default: " + poolRouting[cfg.poolRouting] + ".",
		"WithPublisherPoolClientID":     `Default: parent + "-pub-" + index`,
		"WithWriteOverflowPolicy":       "Default: " + overflow[cfg.writeOverflow] + ".",
		"WithCleanStartOnReconnect":     "Default: " + strconv.FormatBool(cfg.cleanOnReconnect),
		"WithRedirectPolicy":            "Default: FollowRedirects.",
		"WithQueueMaxAttempts":          "Default: " + itoa(qcfg.maxAttempts) + ", no limit",
		"WithQueueRetryBackoff":         "Default: DefaultQueueRetryBackoff.",
	}
	// Defaults the text names by identifier: the identifier must be what the code uses.
	if reflect.ValueOf(cfg.redirectPolicy).Pointer() != reflect.ValueOf(FollowRedirects).Pointer() {
		t.Error("default redirect policy is not FollowRedirects")
	}
	if qcfg.backoff != DefaultQueueRetryBackoff {
		t.Errorf("default queue backoff %v, not DefaultQueueRetryBackoff", qcfg.backoff)
	}
	if cfg.poolClientID != nil || defaultPoolClientID("p", 2) != "p-pub-2" {
		t.Error("default pool client ids are not parent-pub-index")
	}
	found := 0
	fset := token.NewFileSet()
	for _, file := range []string{"options.go", "queuepub.go"} {
		f, err := parser.ParseFile(fset, file, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || want[fn.Name.Name] == "" {
				continue
			}
			found++
			doc := strings.Join(strings.Fields(fn.Doc.Text()), " ")
			if !strings.Contains(doc, want[fn.Name.Name]) {
				t.Errorf("%s: doc %q does not say %q", fn.Name.Name, doc, want[fn.Name.Name])
			}
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
