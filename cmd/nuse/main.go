// Command nuse is NUSE's one binary: the daemon, the launcher and the tools.
//
//	nuse daemon   run nused
//	nuse run      run a program with its sockets through NUSE
//	nuse stats    show what went through NUSE
//	nuse rules    check rules and print decisions
//	nuse engines  list the transport engines built in
//	nuse perf     perftest-style benchmarks
package main

import (
	"fmt"
	"os"
	"sort"
)

// command is one subcommand. Files of this package register theirs in init.
type command struct {
	summary string
	run     func(args []string) int
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string) int) {
	if _, dup := commands[name]; dup {
		panic("nuse: subcommand registered twice: " + name)
	}
	commands[name] = command{summary, run}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: nuse <command> [arguments]\n\ncommands:")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\n'nuse <command> -h' tells more.")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	c, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "nuse: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	os.Exit(c.run(os.Args[2:]))
}
