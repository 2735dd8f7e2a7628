package main

import (
	"fmt"
	"os"
	"sort"
)

// perfModes are the benchmarks under `nuse perf <mode>`. Files of this
// package add theirs with registerPerf in init.
var perfModes = map[string]command{}

func registerPerf(name, summary string, run func(args []string) int) {
	if _, dup := perfModes[name]; dup {
		panic("nuse perf: mode registered twice: " + name)
	}
	perfModes[name] = command{summary, run}
}

func init() {
	register("perf", "perftest-style benchmarks (nuse perf -h lists them)", runPerf)
}

func runPerf(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: nuse perf <mode> [flags]\n\nmodes:")
		var names []string
		for n := range perfModes {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(os.Stderr, "  %-14s %s\n", n, perfModes[n].summary)
		}
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	m, ok := perfModes[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "nuse perf: unknown mode %q (nuse perf -h lists them)\n", args[0])
		return 2
	}
	return m.run(args[1:])
}
