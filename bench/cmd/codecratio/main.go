// Command codecratio runs the side-by-side PUBLISH codec benchmarks of package
// github.com/ternmq/tern/bench/codec and prints a Markdown table of tern against
// paho.golang: time and allocations per operation, and how many times faster tern is.
//
// Each round runs every benchmark once, tern and paho back to back, so both see the same
// machine conditions; the table reports the median of -count rounds.
//
//	go run ./bench/cmd/codecratio             (from the repository root)
//	go run ./cmd/codecratio -count 10 -benchtime 2s   (from bench/)
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/bench/codec"
)

// Targets from PRODUCT.md: how many times faster than paho tern must be.
var targets = map[string]float64{"encode": 2, "decode": 10}

type result struct {
	ns     []float64
	allocs int64
	bytes  int64
}

func main() {
	testing.Init()
	count := flag.Int("count", 5, "rounds; the table shows the median of each benchmark")
	benchtime := flag.Duration("benchtime", time.Second, "time per benchmark per round")
	flag.Parse()
	if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
		fmt.Fprintln(os.Stderr, "codecratio:", err)
		os.Exit(2)
	}

	benches := codec.Benchmarks()
	results := make(map[string]*result)
	key := func(b codec.Bench) string { return b.Lib + "/" + b.Op + "/" + b.Case.Name() }
	for round := 1; round <= *count; round++ {
		fmt.Fprintf(os.Stderr, "round %d/%d\n", round, *count)
		for _, b := range benches {
			r := testing.Benchmark(b.F)
			if r.N == 0 {
				fmt.Fprintf(os.Stderr, "codecratio: %s failed\n", key(b))
				os.Exit(1)
			}
			res := results[key(b)]
			if res == nil {
				res = &result{}
				results[key(b)] = res
			}
			res.ns = append(res.ns, float64(r.T.Nanoseconds())/float64(r.N))
			res.allocs, res.bytes = r.AllocsPerOp(), r.AllocedBytesPerOp()
		}
	}

	fmt.Printf("%s, %s/%s, %s, %d CPUs, %s; median of %d rounds of %v\n\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, cpuModel(), runtime.NumCPU(),
		time.Now().Format("2006-01-02"), *count, *benchtime)
	fmt.Println("| case | tern ns/op | paho ns/op | paho/tern | tern allocs/op | paho allocs/op |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	missed := 0
	for _, op := range codec.Ops {
		for _, c := range codec.Cases() {
			t := results["tern/"+op+"/"+c.Name()]
			p := results["paho/"+op+"/"+c.Name()]
			tn, pn := median(t.ns), median(p.ns)
			ratio := pn / tn
			mark := ""
			if ratio < targets[op] {
				mark = fmt.Sprintf(" (target ×%g missed)", targets[op])
				missed++
			}
			fmt.Printf("| %s %s | %.0f | %.0f | ×%.1f faster%s | %d (%d B) | %d (%d B) |\n",
				op, c.Name(), tn, pn, ratio, mark, t.allocs, t.bytes, p.allocs, p.bytes)
		}
	}
	fmt.Printf("\nTargets: decode ≥ ×%g, encode ≥ ×%g faster than paho. ", targets["decode"], targets["encode"])
	if missed == 0 {
		fmt.Println("All met.")
	} else {
		fmt.Printf("%d case(s) missed.\n", missed)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cpuModel reads the CPU model name from /proc/cpuinfo where there is one.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, value, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown CPU"
}
