package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// cliFlags is a flag set whose options may have a short and a long name (-t and --topic),
// as mosquitto_pub/sub users expect, with a usage listing that shows each option once.
//
// The standard flag package treats -h as a request for help only when no flag named h is
// defined; pub and sub define -h (host), so help is --help (or "tern help pub").
type cliFlags struct {
	fs    *flag.FlagSet
	specs []flagSpec
	out   io.Writer // where usage and errors go
}

// flagSpec is one option as the usage lists it.
type flagSpec struct {
	names []string // short name first, if any
	arg   string   // argument placeholder; "" for a switch
	def   string   // default shown; "" for none
	usage string
}

func newCLIFlags(name, synopsis, description string, stderr io.Writer) *cliFlags {
	c := &cliFlags{fs: flag.NewFlagSet("tern "+name, flag.ContinueOnError), out: stderr}
	c.fs.SetOutput(stderr)
	c.fs.Usage = func() {
		w := c.fs.Output()
		fmt.Fprintf(w, "Usage: tern %s %s\n\n%s\n\nFlags:\n", name, synopsis, description)
		c.printDefaults(w)
	}
	return c
}

// names splits "t,topic" into its names and registers spec.
func (c *cliFlags) add(names, arg, def, usage string) []string {
	ns := strings.Split(names, ",")
	c.specs = append(c.specs, flagSpec{names: ns, arg: arg, def: def, usage: usage})
	return ns
}

func (c *cliFlags) String(p *string, names, arg, def, usage string) {
	*p = def
	for _, n := range c.add(names, arg, def, usage) {
		c.fs.StringVar(p, n, def, usage)
	}
}

func (c *cliFlags) Int(p *int, names, arg string, def int, usage string) {
	*p = def
	for _, n := range c.add(names, arg, strconv.Itoa(def), usage) {
		c.fs.IntVar(p, n, def, usage)
	}
}

func (c *cliFlags) Bool(p *bool, names, usage string) {
	for _, n := range c.add(names, "", "", usage) {
		c.fs.BoolVar(p, n, false, usage)
	}
}

func (c *cliFlags) Duration(p *time.Duration, names, arg string, def time.Duration, usage string) {
	*p = def
	shown := ""
	if def != 0 {
		shown = def.String()
	}
	for _, n := range c.add(names, arg, shown, usage) {
		c.fs.DurationVar(p, n, def, usage)
	}
}

func (c *cliFlags) Var(v flag.Value, names, arg, usage string) {
	for _, n := range c.add(names, arg, "", usage) {
		c.fs.Var(v, n, usage)
	}
}

// setUsage replaces the usage text of the option whose first name is name, for a command
// that gives a shared option a meaning of its own.
func (c *cliFlags) setUsage(name, usage string) {
	for i := range c.specs {
		if c.specs[i].names[0] == name {
			c.specs[i].usage = usage
			for _, n := range c.specs[i].names {
				c.fs.Lookup(n).Usage = usage
			}
		}
	}
}

// set reports whether any of the option's names was given on the command line.
func (c *cliFlags) set(names string) bool {
	found := false
	want := strings.Split(names, ",")
	c.fs.Visit(func(f *flag.Flag) {
		for _, n := range want {
			if f.Name == n {
				found = true
			}
		}
	})
	return found
}

func (c *cliFlags) printDefaults(w io.Writer) {
	for _, s := range c.specs {
		var b strings.Builder
		b.WriteString("  ")
		for i, n := range s.names {
			if i > 0 {
				b.WriteString(", ")
			}
			if len(n) == 1 {
				b.WriteString("-" + n)
			} else {
				b.WriteString("--" + n)
			}
		}
		if s.arg != "" {
			b.WriteString(" " + s.arg)
		}
		fmt.Fprintf(w, "%s\n      %s", b.String(), s.usage)
		if s.def != "" && s.def != "0" {
			fmt.Fprintf(w, " (default %s)", s.def)
		}
		fmt.Fprintln(w)
	}
}

// parse parses args; it returns the exit status to stop with, or -1 to go on. Errors are one
// line naming the flag, then a pointer to the help.
func (c *cliFlags) parse(args []string) int {
	c.fs.SetOutput(io.Discard) // the flag package would print the whole usage on an error
	err := c.fs.Parse(args)
	out := c.out
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.fs.SetOutput(out)
		c.fs.Usage()
		return 0
	case err != nil:
		fmt.Fprintf(out, "%s: %v (see tern help %s)\n", c.fs.Name(), err, strings.TrimPrefix(c.fs.Name(), "tern "))
		return 2
	case c.fs.NArg() > 0:
		fmt.Fprintf(out, "%s: unexpected argument %q\n", c.fs.Name(), c.fs.Arg(0))
		return 2
	}
	c.fs.SetOutput(out)
	return -1
}

// stringList is a repeatable string option.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }
