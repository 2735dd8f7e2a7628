package main

import (
	"net/netip"
	"testing"

	"github.com/nuse-project/nuse/shim/rules"
)

// Issue 12: every decision nuse rules shows says which engine.
func TestRulesDecisionShowsEngine(t *testing.T) {
	set, err := rules.Parse("tcp 127.0.0.0/8 engine kernel; kernel tcp 10.77.0.9; tcp 10.77.0.0/16 engine gvisor; tcp 10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ dir, addr, want string }{
		{"connect", "127.0.0.1:6379", "connect 127.0.0.1:6379 -> nuse, engine kernel (rule 1: tcp 127.0.0.0/8 engine kernel)"},
		{"listen", "10.77.0.2:80", "listen 10.77.0.2:80 -> nuse, engine gvisor (rule 3: tcp 10.77.0.0/16 engine gvisor)"},
		{"connect", "10.1.2.3:80", "connect 10.1.2.3:80 -> nuse, the daemon's default engine (rule 4: tcp 10.0.0.0/8)"},
		{"connect", "10.77.0.9:80", "connect 10.77.0.9:80 -> kernel (no NUSE engine) (rule 2: kernel tcp 10.77.0.9)"},
		{"connect", "192.0.2.1:80", "connect 192.0.2.1:80 -> kernel (no NUSE engine) (no rule matched)"},
		{"connect", "127.0.0.1:53", "connect 127.0.0.1:53 -> kernel (no NUSE engine) (built-in: DNS (port 53) stays in the kernel)"},
	} {
		if got := decision(set, c.dir, netip.MustParseAddrPort(c.addr), ""); got != c.want {
			t.Errorf("decision %s %s:\n got %s\nwant %s", c.dir, c.addr, got, c.want)
		}
	}
}
