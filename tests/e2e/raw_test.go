package e2e

import (
	"strings"
	"testing"
	"time"
)

// Issue 11 case 3: what a program writes to a NUSE socket past the preload
// (a raw syscall) cannot be carried in order, so the daemon resets the
// connection: the peer sees a reset (never a clean EOF after a short
// stream), the writer ECONNRESET, the shim and the daemon say why. A raw
// read gets a readiness byte as data; the daemon notices and resets too.
// Before this, the raw bytes were dropped silently and both ends waited.
func TestRawSyscallsReset(t *testing.T) {
	requireRoot(t)
	requireTool(t, "python3")
	ns := newNetns(t)
	d := ns.startDaemon("--netdev", "none")
	out, err := ns.run(3*time.Minute, ns.nuseRun("tcp 127.0.0.0/8", "python3", testdata("raw_io.py"), "18540")...)
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"write-wait client=reset peer=reset peer-data=b'lib'",
		"write-close peer=reset peer-data=b'lib'",
		"read client=reset raw=b'\\x01' peer=reset",
		"nuse: the program wrote to a NUSE socket past the preload",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	log := d.output()
	if strings.Count(log, "bytes were written to its fd past the preload") != 2 ||
		strings.Count(log, "read past the preload") != 1 {
		t.Errorf("the daemon's log does not name the two raw writes and the raw read:\n%s", log)
	}
	raw := 0
	for _, s := range sessionsOf(ns.stats(), "python3") {
		for _, so := range s.Sockets {
			if so.State == "raw-reset" {
				raw++
			}
		}
	}
	if raw != 3 {
		t.Errorf("nuse stats shows %d sockets in state raw-reset, want 3", raw)
	}
}
