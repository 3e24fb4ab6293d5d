package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// maxFailedExit caps the exit status, which counts failed scenarios.
const maxFailedExit = 100

func runRunCmd(args []string, stdout, stderr io.Writer) int {
	c := newCLIFlags("run", "[flags] FILE.yml|DIR ...", `Runs declarative MQTT test scenarios (YAML; see README.md, "Scenarios"), and venom test
suites whose steps are type: mqtt. A directory runs every .yml/.yaml file in it as a suite.
Every file is validated before anything connects. Without a broker in the file or
--broker, scenarios run on the embedded broker.

Exit status: the number of failed scenarios (at most 100); 2 for an invalid file or usage.`, stderr)
	var brokerURL, junit string
	var jsonOut bool
	var vars stringList
	c.String(&brokerURL, "broker", "URL", "", "broker for clients that name none (default: the embedded broker)")
	c.Var(&vars, "var", "KEY=VALUE", "set a var (repeatable; wins over the file's vars)")
	c.String(&junit, "junit", "FILE", "", "write a JUnit XML report to FILE")
	c.Bool(&jsonOut, "json", "write an NDJSON event log on stdout (the summary goes to stderr)")
	// Flags may follow the files: parse what is left after each file argument.
	var files []string
	rest := args
	for {
		if st := c.parseInterspersed(rest); st >= 0 {
			return st
		}
		if c.fs.NArg() == 0 {
			break
		}
		files = append(files, c.fs.Arg(0))
		rest = c.fs.Args()[1:]
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "tern run: no scenario file (see tern help run)")
		return 2
	}
	overrides := map[string]string{}
	for _, v := range vars {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			fmt.Fprintf(stderr, "tern run: --var %q: want KEY=VALUE\n", v)
			return 2
		}
		overrides[k] = val
	}
	if brokerURL != "" {
		if _, err := parseBrokerArg(brokerURL); err != nil {
			fmt.Fprintf(stderr, "tern run: --broker: %v\n", err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	summary := stdout
	var ev *eventLog
	if jsonOut {
		ev, summary = &eventLog{w: stdout}, stderr
	}
	return runSuite(ctx, runOptions{files: files, vars: overrides, broker: brokerURL, junit: junit,
		events: ev, summary: summary, stderr: stderr})
}

// parseInterspersed parses flags up to the next non-flag argument.
func (c *cliFlags) parseInterspersed(args []string) int {
	c.fs.SetOutput(io.Discard)
	err := c.fs.Parse(args)
	c.fs.SetOutput(c.out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.fs.Usage()
		return 0
	case err != nil:
		fmt.Fprintf(c.out, "%s: %v (see tern help run)\n", c.fs.Name(), err)
		return 2
	}
	return -1
}

type runOptions struct {
	files   []string
	vars    map[string]string
	broker  string
	junit   string
	events  *eventLog
	summary io.Writer
	stderr  io.Writer
}

// scenarioResult is the outcome of one scenario.
type scenarioResult struct {
	sc      *scenario
	failed  *step
	err     error
	elapsed time.Duration
}

// runSuite validates every file, then runs the scenarios one after another, and returns
// the exit status.
func runSuite(ctx context.Context, o runOptions) int {
	files, err := expandFiles(o.files)
	if err != nil {
		fmt.Fprintf(o.stderr, "tern run: %v\n", err)
		return 2
	}
	var scs []*scenario
	invalid := false
	for _, f := range files {
		sc, err := loadScenario(f, o.vars)
		if err == nil {
			r := newRunner(sc, o.broker, nil)
			if ferr := r.checkFaults(sc.steps); ferr != nil {
				err = &invalidFile{f, []string{f + ":" + describeYAMLError(ferr)}}
			}
		}
		if err != nil {
			fmt.Fprintln(o.stderr, err)
			invalid = true
			continue
		}
		scs = append(scs, sc)
	}
	if invalid {
		fmt.Fprintln(o.stderr, "tern run: invalid scenario file; nothing was run")
		return 2
	}
	var results []scenarioResult
	failed := 0
	for _, sc := range scs {
		o.events.scenarioStart(sc)
		start := time.Now()
		step, err := newRunner(sc, o.broker, o.events).run(ctx)
		res := scenarioResult{sc: sc, failed: step, err: err, elapsed: time.Since(start)}
		o.events.scenarioEnd(sc, res)
		results = append(results, res)
		printResult(o.summary, res)
		if err != nil {
			failed++
		}
		if ctx.Err() != nil {
			break
		}
	}
	fmt.Fprintf(o.summary, "%d scenarios: %d passed, %d failed\n", len(results), len(results)-failed, failed)
	if o.junit != "" {
		if err := writeJUnit(o.junit, results); err != nil {
			fmt.Fprintf(o.stderr, "tern run: --junit: %v\n", err)
			failed = max(failed, 1)
		}
	}
	return min(failed, maxFailedExit)
}

// expandFiles turns directories into the .yml/.yaml files in them, sorted.
func expandFiles(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil || !fi.IsDir() {
			out = append(out, a) // a missing file is reported by the loader
			continue
		}
		var in []string
		for _, pat := range []string{"*.yml", "*.yaml"} {
			m, _ := filepath.Glob(filepath.Join(a, pat))
			in = append(in, m...)
		}
		if len(in) == 0 {
			return nil, fmt.Errorf("%s: no .yml or .yaml file", a)
		}
		sort.Strings(in)
		out = append(out, in...)
	}
	return out, nil
}

// failureText is what a failed scenario reports: where, which step, why.
func failureText(res scenarioResult) string {
	if res.failed == nil {
		return res.err.Error()
	}
	label := res.failed.kind()
	if res.failed.Name != "" {
		label += " " + strconvQuote(res.failed.Name)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %v", res.sc.file, res.failed.at.line, res.failed.at.col, label, res.err)
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

func printResult(w io.Writer, res scenarioResult) {
	el := res.elapsed.Round(time.Millisecond)
	if res.err == nil {
		fmt.Fprintf(w, "PASS %s (%v)\n", res.sc.name, el)
		return
	}
	fmt.Fprintf(w, "FAIL %s (%v)\n  %s\n", res.sc.name, el, failureText(res))
}

// eventLog writes the --json NDJSON events; a nil log writes nothing. Safe for
// concurrent use (parallel steps and subscription callbacks write to it).
type eventLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *eventLog) emit(fields map[string]any) {
	if l == nil {
		return
	}
	fields["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(fields)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(append(b, '\n'))
}

func (l *eventLog) scenarioStart(sc *scenario) {
	l.emit(map[string]any{"event": "scenario_start", "scenario": sc.name, "file": sc.file})
}

func (l *eventLog) scenarioEnd(sc *scenario, res scenarioResult) {
	f := map[string]any{"event": "scenario_end", "scenario": sc.name, "ok": res.err == nil,
		"elapsed_ms": res.elapsed.Milliseconds()}
	if res.err != nil {
		f["error"] = failureText(res)
	}
	l.emit(f)
}

func (l *eventLog) stepStart(sc *scenario, n int, s *step) {
	l.emit(map[string]any{"event": "step_start", "scenario": sc.name, "step": n, "kind": s.kind(),
		"name": s.Name, "line": s.at.line})
}

func (l *eventLog) stepEnd(sc *scenario, n int, s *step, d time.Duration, err error) {
	f := map[string]any{"event": "step_end", "scenario": sc.name, "step": n, "kind": s.kind(),
		"ok": err == nil, "elapsed_ms": d.Milliseconds()}
	if err != nil {
		f["error"] = err.Error()
	}
	l.emit(f)
}

func (l *eventLog) message(sc *scenario, sub string, g got) {
	if l == nil {
		return
	}
	f := map[string]any{"event": "message", "scenario": sc.name, "subscription": sub, "topic": g.Topic,
		"qos": g.QoS, "retain": g.Retain}
	if utf8.Valid(g.Payload) {
		f["payload"] = string(g.Payload)
	} else {
		f["payload"], f["payload_encoding"] = g.Payload, "base64"
	}
	l.emit(f)
}

// JUnit XML: the testsuites/testsuite/testcase/failure shape CI systems read.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

func writeJUnit(path string, results []scenarioResult) error {
	suite := junitSuite{Name: "tern run"}
	var total time.Duration
	for _, res := range results {
		c := junitCase{Name: res.sc.name, Classname: res.sc.file, Time: secs(res.elapsed)}
		if res.err != nil {
			suite.Failures++
			kind := "scenario"
			if res.failed != nil {
				kind = res.failed.kind()
			}
			c.Failure = &junitFailure{Message: res.err.Error(), Type: kind, Text: failureText(res)}
		}
		total += res.elapsed
		suite.Cases = append(suite.Cases, c)
	}
	suite.Tests, suite.Time = len(results), secs(total)
	doc := junitSuites{Tests: suite.Tests, Failures: suite.Failures, Time: suite.Time, Suites: []junitSuite{suite}}
	b, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte(xml.Header), append(b, '\n')...), 0o644)
}
