package e2e

import (
	"os"
	"strings"
	"testing"
)

// Issue 12: the daemon runs with --engine kernel, and the C semantics
// programs pass under it over loopback rules (IPv4 and IPv6): their NUSE
// sockets are kernel sockets held by the daemon, in this test's namespace.
// nuse stats names the engine of every socket.
func TestKernelEngine(t *testing.T) {
	requireRoot(t)
	for _, p := range []string{"tcp_semantics", "epoll_et"} {
		if _, err := os.Stat(bin(p)); err != nil {
			t.Fatalf("%s missing: run 'make build'", bin(p))
		}
	}
	ns := newNetns(t)
	d := ns.startDaemon("--engine", "kernel", "--engines", "gvisor", "--netdev", "none")
	if out := d.output(); !strings.Contains(out, "engine kernel (also running gvisor)") {
		t.Fatalf("daemon log lacks its engines:\n%s", out)
	}
	const rules = "tcp 127.0.0.0/8; tcp [::1]"
	t.Run("tcp_semantics", func(t *testing.T) {
		ns.runProgram(t, rules, false, " 0 failed", bin("tcp_semantics"), "-4", "127.0.0.1", "-6", "::1", "-p", "18300")
	})
	t.Run("epoll_et", func(t *testing.T) {
		ns.runProgram(t, rules, false, "12 rounds x 6000000 bytes ok", bin("epoll_et"), "127.0.0.1", "18400", "12", "6000000")
	})
	t.Run("epoll_et-v6", func(t *testing.T) {
		ns.runProgram(t, rules, false, "12 rounds x 6000000 bytes ok", bin("epoll_et"), "::1", "18401", "12", "6000000")
	})
	st := ns.stats()
	var kernel, gv bool
	for _, e := range st.Engines {
		switch {
		case e.Name == "kernel" && e.Default && e.TxBytes >= 12*6000000:
			kernel = true
		case e.Name == "gvisor" && !e.Default && e.TxBytes == 0:
			gv = true
		}
	}
	if st.Engine != "kernel" || !kernel || !gv {
		t.Errorf("stats engines: default %q, %+v: want kernel (default) carrying the traffic, gvisor idle", st.Engine, st.Engines)
	}
	n := 0
	for _, prog := range []string{"tcp_semantics", "epoll_et"} {
		for _, s := range sessionsOf(st, prog) {
			for _, so := range s.Sockets {
				n++
				if so.Engine != "kernel" {
					t.Errorf("%s socket %d (%s → %s) on engine %q", prog, so.Slot, so.Local, so.Remote, so.Engine)
				}
			}
		}
	}
	if n == 0 {
		t.Errorf("stats show no sockets of the programs")
	}
	out := ns.mustRun(bin("nuse"), "stats", "--sock", ns.sock())
	if !strings.Contains(out, "kernel (default)") || !strings.Contains(out, "ENGINE") {
		t.Errorf("nuse stats output lacks the engines:\n%s", out)
	}
	if head, _, _ := strings.Cut(out, "\nlive sessions:"); head != "" {
		t.Logf("nuse stats, head:\n%s", head)
	}
}
