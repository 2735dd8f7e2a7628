package e2e

import (
	"strings"
	"testing"
	"time"
)

// Issue 9: a preloaded program in a pid namespace of its own (as in a
// container) gets a session. Its getpid() in the hello is not the pid the
// kernel reports to the daemon (SO_PEERCRED); the daemon goes by the
// kernel's, and the program's sockets are NUSE's.
func TestPidNamespaceGetsSession(t *testing.T) {
	requireRoot(t)
	requireTool(t, "unshare")
	ns := newNetns(t)
	ns.startDaemon()
	www := ns.dir
	writeRandomFile(t, www+"/f", 1<<20)
	ns.startHTTP(subnetRules, "10.77.0.2", 8081, www)
	before := len(sessionsOf(ns.stats(), "curl"))
	out, err := ns.run(time.Minute, ns.nuseRun(subnetRules, "unshare", "--pid", "--fork",
		"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "http://10.77.0.2:8081/f")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "200 1048576") {
		t.Fatalf("curl in a pid namespace: %q", out)
	}
	ss := sessionsOf(ns.stats(), "curl")
	if len(ss) != before+1 {
		t.Fatalf("curl in a pid namespace opened %d NUSE sessions, want 1; it said %q", len(ss)-before, out)
	}
	if rx := totalRx(ss); rx < 1<<20 {
		t.Fatalf("curl received %d bytes through NUSE, want the 1 MiB file", rx)
	}
}
