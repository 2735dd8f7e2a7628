package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"

	"github.com/nuse-project/nuse/shim/rules"
)

func init() {
	register("rules", "check rules and show which sockets they give to NUSE", runRules)
}

func runRules(args []string) int {
	fs := flag.NewFlagSet("nuse rules", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, `usage: nuse rules [--rules TEXT | --rules-file FILE] [connect|listen ADDR:PORT [PROGRAM]]

Parses the rules exactly as libnuse.so does, lists them, and with a socket
says whether it goes to NUSE (on which engine) or the kernel and which rule
decided.
Without --rules: $NUSE_RULES_FILE, $NUSE_RULES, or nuse run's default.

examples:
  nuse rules --rules "tcp 10.77.0.0/16; kernel tcp 10.77.0.9" connect 10.77.0.9:80
  nuse rules --rules "tcp listen *:8080 prog redis-server" listen 0.0.0.0:8080 redis-server
  nuse rules --rules "tcp 127.0.0.0/8 engine kernel; tcp 10.77.0.0/16 engine gvisor" connect 127.0.0.1:6379

flags:
`)
		fs.PrintDefaults()
	}
	text := fs.String("rules", "", "rules text")
	file := fs.String("rules-file", "", "file with rules")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	t, src, err := rulesText(*text, *file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse rules:", err)
		return 1
	}
	if src == "" {
		t, src = DefaultRules, "nuse run's default"
	}
	*text = t
	set, err := rules.Parse(*text)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nuse rules: %v\n", err)
		return 1
	}
	fmt.Printf("rules from %s (first match wins; no match: kernel; TCP port 53 always kernel;\n"+
		"a rule's engine that the daemon does not run: kernel, said once by the shim):\n%s", src, set.String())
	rest := fs.Args()
	if len(rest) == 0 {
		return 0
	}
	if len(rest) < 2 || len(rest) > 3 || (rest[0] != "connect" && rest[0] != "listen") {
		fs.Usage()
		return 2
	}
	ap, err := netip.ParseAddrPort(rest[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "nuse rules: %q is not ADDR:PORT (IPv6 as [::1]:80)\n", rest[1])
		return 2
	}
	prog := ""
	if len(rest) == 3 {
		prog = rest[2]
	}
	fmt.Println(decision(set, rest[0], ap, prog))
	return 0
}

// decision is the line that says where a socket goes: NUSE on which engine,
// or the kernel (no engine), and the rule that decided.
func decision(set *rules.Set, dir string, ap netip.AddrPort, prog string) string {
	nuse, idx, why := set.Decide(dir, ap, prog)
	where := "kernel (no NUSE engine)"
	if nuse {
		where = "nuse, the daemon's default engine"
		if e := set.Engine(idx); e != "" {
			where = "nuse, engine " + e
		}
	}
	switch idx {
	case 0:
		why = "no rule matched"
	case -1:
		why = "built-in: DNS (port 53) stays in the kernel"
	default:
		why = fmt.Sprintf("rule %d: %s", idx, why)
	}
	return fmt.Sprintf("%s %s -> %s (%s)", dir, ap, where, why)
}
