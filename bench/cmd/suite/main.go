// Command suite runs the side-by-side benchmarks of tern against the Eclipse Paho Go clients
// (autopaho and paho.mqtt.golang) and a raw client, through a Mosquitto it starts itself on a
// free loopback port, and prints Markdown tables: every library's throughput, CPU,
// allocations and bytes per message, the ratios of tern to each peer, and the targets of
// PRODUCT.md section 5.
//
// Each library runs in a child process of its own (this binary again, with -child), so the
// CPU time measured is the library's alone. Every message is stamped and checked: a lost,
// duplicated, torn or unknown message fails the run, and the command exits 1.
//
//	go run ./cmd/suite                  # from bench/: every scenario, 3 runs, medians
//	go run ./cmd/suite -quick           # every scenario small: a correctness check
//	go run ./cmd/suite -only 'pub-q0' -runs 5 -json out.json -cpuprofile prof/
//	go run ./cmd/suite -only 'conc64' -sink proc  # receiving side in a process of its own
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/ternmq/tern/bench/suite"
)

func main() {
	childJob := flag.String(suite.ChildFlag, "", "internal: run one job as a child process (JSON)")
	runs := flag.Int("runs", 3, "runs of every scenario; the tables show medians")
	quick := flag.Bool("quick", false, "every scenario with small counts, one run: a correctness check")
	jsonOut := flag.String("json", "", "write every run's raw results and the medians to this file")
	only := flag.String("only", "", "run only the scenarios whose name matches this regular expression")
	profDir := flag.String("cpuprofile", "", "directory for CPU profiles of tern's child processes")
	report := flag.String("report", "", "print the tables of the results in this -json file instead of running")
	sink := flag.String("sink", suite.SinkRaw, sinkUsage())
	flag.Parse()

	if *report != "" {
		os.Exit(reprint(*report))
	}

	if *childJob != "" {
		if err := suite.RunChild(*childJob, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run(*runs, *quick, *jsonOut, *only, *profDir, *sink))
}

// sinkUsage is the help text of -sink: every sink and what it is.
func sinkUsage() string {
	u := "receiving side of the publish scenarios:"
	for _, s := range suite.SinkNames() {
		u += fmt.Sprintf("\n  %s: %s", s, suite.SinkInfo(s))
	}
	return u
}

func run(runs int, quick bool, jsonOut, only, profDir, sink string) int {
	opt := suite.Options{Runs: runs, Quick: quick, ProfileDir: profDir, Log: os.Stderr, Sink: sink}
	if suite.SinkInfo(sink) == "" {
		fmt.Fprintf(os.Stderr, "suite: -sink %q: want one of %v\n", sink, suite.SinkNames())
		return 2
	}
	if quick {
		opt.Runs = 1
	}
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			fmt.Fprintln(os.Stderr, "suite: -only:", err)
			return 2
		}
		opt.Only = re
	}
	if profDir != "" {
		if err := os.MkdirAll(profDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "suite:", err)
			return 2
		}
	}
	s, err := suite.New(opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		return 1
	}
	defer s.Close()
	start := time.Now()
	s.Run()
	rows := suite.Rows(s.Results)
	conditions := suite.Conditions(opt.Runs, quick, sink)
	suite.WriteMarkdown(os.Stdout, rows, conditions)
	fmt.Fprintf(os.Stderr, "suite: %d runs in %v\n", len(s.Results), time.Since(start).Round(time.Second))

	if jsonOut != "" {
		b, _ := json.MarshalIndent(struct {
			Conditions string         `json:"conditions"`
			Sink       string         `json:"sink"`
			Results    []suite.Result `json:"results"`
			Rows       []suite.Row    `json:"medians"`
		}{conditions, sink, s.Results, rows}, "", "  ")
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "suite:", err)
			return 1
		}
	}
	failed := 0
	for _, r := range s.Results {
		if r.Skipped != "" {
			fmt.Fprintf(os.Stderr, "SKIPPED: %s %s run %d: %s\n", r.Scenario, r.Lib, r.Run, r.Skipped)
		}
		if !r.OK() {
			failed++
			fmt.Fprintf(os.Stderr, "FAILED: %s %s run %d: %s\n", r.Scenario, r.Lib, r.Run, r.Err)
		}
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "suite: %d of %d runs FAILED (lost, duplicated, torn or unknown messages, or errors)\n", failed, len(s.Results))
		return 1
	}
	fmt.Fprintf(os.Stderr, "suite: all %d runs delivered every message exactly once and intact\n", len(s.Results))
	return 0
}

// reprint prints the tables of a -json file again (with the current report code).
func reprint(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "suite:", err)
		return 2
	}
	var in struct {
		Conditions string         `json:"conditions"`
		Results    []suite.Result `json:"results"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		fmt.Fprintln(os.Stderr, "suite:", file+":", err)
		return 2
	}
	suite.WriteMarkdown(os.Stdout, suite.Rows(in.Results), in.Conditions)
	return 0
}
