// Command tern is the command-line face of the Tern MQTT toolkit: publish and subscribe
// (pub, sub, with a durable store-and-forward spool), an embedded broker (serve) and a
// demonstration of durable publishing through faults (demo), declarative test scenarios
// (run) and a load generator with honest latency and exactly-once checks (bench).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
)

// command is one subcommand: run parses args and returns the process exit status.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"demo", "publish durably through cut connections and a broker restart; prove nothing is lost", runDemoCmd},
		{"serve", "run the embedded MQTT broker on loopback", runServeCmd},
		{"pub", "publish messages, like mosquitto_pub; --queue DIR stores and forwards", runPubCmd},
		{"sub", "subscribe and print messages, like mosquitto_sub", runSubCmd},
		{"bench", "load a broker: publish/subscribe/connection workloads, latency, loss, plots", runBenchCmd},
		{"run", "run YAML test scenarios (and venom mqtt suites); exit status = failed scenarios", runRunCmd},
		{"version", "print the version of tern and of Go", runVersionCmd},
	}
}

// version is the command's version; a release build sets it with -ldflags "-X main.version=...".
var version = "devel"

func runVersionCmd(_ []string, stdout, _ io.Writer) int {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "devel" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	fmt.Fprintf(stdout, "tern %s (%s, %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

// dispatch runs the subcommand named by args[0] and returns the exit status: 0 success,
// 1 failure, 2 usage error, 27 the -W timeout of sub.
func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			usage(stdout)
			return 0
		}
		// "tern help demo" is "tern demo --help", printed on stdout.
		i := slices.IndexFunc(commands(), func(c command) bool { return c.name == rest[0] })
		if i < 0 {
			fmt.Fprintf(stderr, "tern: unknown command %q\n\n", rest[0])
			usage(stderr)
			return 2
		}
		return commands()[i].run([]string{"--help"}, stdout, stdout)
	}
	i := slices.IndexFunc(commands(), func(c command) bool { return c.name == name })
	if i < 0 {
		fmt.Fprintf(stderr, "tern: unknown command %q\n\n", name)
		usage(stderr)
		return 2
	}
	return commands()[i].run(rest, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "tern is a toolkit for MQTT 5.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage:")
	fmt.Fprintln(w, "  tern <command> [flags]")
	fmt.Fprintln(w, "  tern help <command>")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-7s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Exit status: 0 success, 1 runtime failure (a refusal, a lost message, an unreachable")
	fmt.Fprintln(w, "broker), 2 usage error, 27 the -W timeout of tern sub.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "pub and sub connect to --url, else $TERN_BROKER, else "+defaultBroker+".")
}

// newFlagSet returns a flag set for a subcommand; -h prints the description and the flags
// to stderr, as Go tools do.
func newFlagSet(name, synopsis, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tern "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: tern %s %s\n\n%s\n\nFlags:\n", name, synopsis, description)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; it returns the exit status to stop with, or -1 to go on.
func parseFlags(fs *flag.FlagSet, args []string) int {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0 // the usage has been printed
	case err != nil:
		return 2 // the flag package has printed the error and the usage
	case fs.NArg() > 0:
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2
	}
	return -1
}
