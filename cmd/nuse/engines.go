package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/nuse-project/nuse/daemon"
	"github.com/nuse-project/nuse/stack"
)

func init() {
	register("engines", "list the transport engines built in, and their settings", runEngines)
}

func runEngines(args []string) int {
	fs := flag.NewFlagSet("nuse engines", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: nuse engines [--json]\n\nLists the transport engines this nuse has built in: what each is for and\nthe settings `nuse daemon --set ENGINE.KEY=VALUE` gives it.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	regs := stack.Registered()
	if *asJSON {
		type setting struct{ Key, Default, Help string }
		type engine struct {
			Name     string    `json:"name"`
			Default  bool      `json:"default"`
			Summary  string    `json:"summary"`
			Settings []setting `json:"settings"`
		}
		var out []engine
		for _, r := range regs {
			e := engine{Name: r.Name, Default: r.Name == daemon.DefaultEngine, Summary: r.Summary, Settings: []setting{}}
			for _, s := range r.Settings {
				e.Settings = append(e.Settings, setting(s))
			}
			out = append(out, e)
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		os.Stdout.Write(append(b, '\n'))
		return 0
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for i, r := range regs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		def := ""
		if r.Name == daemon.DefaultEngine {
			def = " (default)"
		}
		fmt.Fprintf(w, "%s%s\n  %s\n", r.Name, def, r.Summary)
		if len(r.Settings) == 0 {
			fmt.Fprintln(w, "  no settings")
			continue
		}
		fmt.Fprintf(w, "  SETTING (--set %s.KEY=VALUE)\tDEFAULT\t\n", r.Name)
		for _, s := range r.Settings {
			fmt.Fprintf(w, "  %s\t%s\t%s\n", s.Key, s.Default, s.Help)
		}
	}
	w.Flush()
	fmt.Println("\nnuse daemon --engine NAME picks the default engine; --engines A,B runs more beside it.")
	return 0
}
