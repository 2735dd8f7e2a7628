package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nuse-project/nuse/daemon/usock"
)

// Issue 12: the daemon runs with --engine kernel, and the C semantics
// programs pass under it over loopback rules (IPv4 and IPv6): their NUSE
// sockets are kernel sockets held by the daemon, in this test's namespace.
// nuse stats names the engine of every socket.
func TestKernelEngine(t *testing.T) { enginePrograms(t, "kernel") }

// Issue 12: the same under --engine shm: both ends of every connection are
// the programs' own NUSE sockets, joined by the shm engine's regions.
func TestShmEngine(t *testing.T) { enginePrograms(t, "shm") }

// enginePrograms runs tcp_semantics and epoll_et against a daemon whose
// default engine is engine (gvisor also running, idle) and checks that
// engine carried every socket and the bytes.
func enginePrograms(t *testing.T, engine string) {
	requireRoot(t)
	for _, p := range []string{"tcp_semantics", "epoll_et"} {
		if _, err := os.Stat(bin(p)); err != nil {
			t.Fatalf("%s missing: run 'make build'", bin(p))
		}
	}
	ns := newNetns(t)
	d := ns.startDaemon("--engine", engine, "--engines", "gvisor", "--netdev", "none")
	// The daemon answers on its socket a moment before it logs that it is
	// ready: wait for the line.
	ns.waitFor("the daemon's ready line naming its engines", 10*time.Second, func() bool {
		return strings.Contains(d.output(), "engine "+engine+" (also running gvisor)")
	})
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
	// The sanitizer build of the shim on this engine's paths (shm: the
	// region, the wakers).
	t.Run("tcp_semantics-asan", func(t *testing.T) {
		ns.runProgram(t, rules, true, " 0 failed", bin("tcp_semantics"), "-4", "127.0.0.1", "-6", "::1", "-p", "18320")
	})
	t.Run("epoll_et-asan", func(t *testing.T) {
		ns.runProgram(t, rules, true, "12 rounds x 6000000 bytes ok", bin("epoll_et"), "127.0.0.1", "18402", "12", "6000000")
	})
	st := ns.stats()
	var carried, gv bool
	for _, e := range st.Engines {
		switch {
		case e.Name == engine && e.Default && e.TxBytes >= 12*6000000:
			carried = true
		case e.Name == "gvisor" && !e.Default && e.TxBytes == 0:
			gv = true
		}
	}
	if st.Engine != engine || !carried || !gv {
		t.Errorf("stats engines: default %q, %+v: want %s (default) carrying the traffic, gvisor idle", st.Engine, st.Engines, engine)
	}
	n := 0
	for _, prog := range []string{"tcp_semantics", "epoll_et"} {
		for _, s := range sessionsOf(st, prog) {
			for _, so := range s.Sockets {
				n++
				if so.Engine != engine {
					t.Errorf("%s socket %d (%s → %s) on engine %q", prog, so.Slot, so.Local, so.Remote, so.Engine)
				}
			}
		}
	}
	if n == 0 {
		t.Errorf("stats show no sockets of the programs")
	}
	out := ns.mustRun(bin("nuse"), "stats", "--sock", ns.sock())
	if !strings.Contains(out, engine+" (default)") || !strings.Contains(out, "ENGINE") {
		t.Errorf("nuse stats output lacks the engines:\n%s", out)
	}
	if head, _, _ := strings.Cut(out, "\nlive sessions:"); head != "" {
		t.Logf("nuse stats, head:\n%s", head)
	}
}

// holdTwoconns runs twoconns under rules over 127.0.0.1 on ports, waits
// until it holds its connections, calls during, then lets it finish and
// returns its output.
func (ns *netns) holdTwoconns(t *testing.T, rules string, during func(), ports ...int) string {
	t.Helper()
	hold := filepath.Join(ns.dir, "release")
	argv := []string{bin("twoconns"), "127.0.0.1", hold}
	for _, p := range ports {
		argv = append(argv, strconv.Itoa(p))
	}
	p := ns.start(ns.nuseRun(rules, argv...)...)
	ns.waitFor("twoconns to hold its connections", 30*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("twoconns ended early: %v\n%s", p.err, p.output())
		default:
		}
		return strings.Contains(p.output(), "holding ")
	})
	during()
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("twoconns did not finish:\n%s", p.output())
	}
	out := p.output()
	t.Logf("twoconns:\n%s", strings.TrimSpace(out))
	if p.err != nil || !strings.Contains(out, fmt.Sprintf("twoconns: %d connections ok", len(ports))) {
		t.Fatalf("twoconns: %v", p.err)
	}
	return out
}

// enginesByPort maps each port to the engines of the program's live sockets
// that have it as local or remote port.
func enginesByPort(st *usock.Stats, comm string, ports ...int) map[int][]string {
	got := map[int][]string{}
	for _, s := range sessionsOf(st, comm) {
		for _, so := range s.Sockets {
			for _, p := range ports {
				suf := ":" + strconv.Itoa(p)
				if strings.HasSuffix(so.Local, suf) || strings.HasSuffix(so.Remote, suf) {
					got[p] = append(got[p], so.Engine)
				}
			}
		}
	}
	return got
}

// Issue 12, per-rule choice: one preloaded program holds two connections at
// once, one on the kernel engine and one on gvisor (rules by port), and
// stats show each socket (listener, connecting end, accepted end) on its
// rule's engine.
func TestEngineByRule(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	ns.startDaemon("--engine", "gvisor", "--engines", "kernel", "--netdev", "none")
	const rules = "tcp *:18510 engine kernel; tcp *:18511 engine gvisor"
	for port, want := range map[string]string{
		"18510": "-> nuse, engine kernel (rule 1: tcp *:18510 engine kernel)",
		"18511": "-> nuse, engine gvisor (rule 2: tcp *:18511 engine gvisor)",
	} {
		if out := ns.mustRun(bin("nuse"), "rules", "--rules", rules, "connect", "127.0.0.1:"+port); !strings.Contains(out, want) {
			t.Errorf("nuse rules for port %s lacks %q:\n%s", port, want, out)
		}
	}
	ns.holdTwoconns(t, rules, func() {
		got := enginesByPort(ns.stats(), "twoconns", 18510, 18511)
		for port, want := range map[int]string{18510: "kernel", 18511: "gvisor"} {
			if len(got[port]) != 3 {
				t.Errorf("port %d: %d NUSE sockets (%v), want 3 (listener, client, accepted)", port, len(got[port]), got[port])
			}
			for _, e := range got[port] {
				if e != want {
					t.Errorf("port %d: a socket on engine %q, want %q (all: %v)", port, e, want, got[port])
				}
			}
		}
		out := ns.mustRun(bin("nuse"), "stats", "--sock", ns.sock())
		if !strings.Contains(out, "kernel") || !strings.Contains(out, "gvisor (default)") {
			t.Errorf("nuse stats output lacks the engines:\n%s", out)
		}
	}, 18510, 18511)
}

// Issue 12, per-rule choice with shm: one preloaded program holds a
// connection on shm (both ends its own NUSE sockets) and one on gvisor at
// once, and stats show each socket on its rule's engine.
func TestEngineByRuleShm(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	ns.startDaemon("--engine", "gvisor", "--engines", "shm", "--netdev", "none")
	const rules = "tcp *:18512 engine shm; tcp *:18513 engine gvisor"
	ns.holdTwoconns(t, rules, func() {
		got := enginesByPort(ns.stats(), "twoconns", 18512, 18513)
		for port, want := range map[int]string{18512: "shm", 18513: "gvisor"} {
			if len(got[port]) != 3 {
				t.Errorf("port %d: %d NUSE sockets (%v), want 3 (listener, client, accepted)", port, len(got[port]), got[port])
			}
			for _, e := range got[port] {
				if e != want {
					t.Errorf("port %d: a socket on engine %q, want %q (all: %v)", port, e, want, got[port])
				}
			}
		}
	}, 18512, 18513)
}

// Issue 12: killing one end of a shm connection (SIGKILL: the daemon ends
// its session and closes its sockets) gives the other end, blocked in
// recv, EOF or ECONNRESET, as TCP would; nothing hangs.
func TestShmPeerKilled(t *testing.T) {
	requireRoot(t)
	requireTool(t, "python3")
	ns := newNetns(t)
	ns.startDaemon("--engine", "shm", "--netdev", "none")
	const rules = "tcp 127.0.0.0/8 engine shm"
	srv := ns.start(ns.nuseRun(rules, "python3", "-c", `
import socket, time
l = socket.socket()
l.bind(("127.0.0.1", 18530))
l.listen(4)
print("listening", flush=True)
c, _ = l.accept()
c.sendall(b"hi")
time.sleep(3600)
`)...)
	ns.waitFor("the server to listen", 20*time.Second, func() bool { return strings.Contains(srv.output(), "listening") })
	cl := ns.start(ns.nuseRun(rules, "python3", "-c", `
import socket
s = socket.create_connection(("127.0.0.1", 18530))
assert s.recv(2) == b"hi"
print("got hi", flush=True)
try:
    print("eof" if s.recv(10) == b"" else "data", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
`)...)
	ns.waitFor("the client to read", 20*time.Second, func() bool { return strings.Contains(cl.output(), "got hi") })
	st := ns.statsJSON()
	if n := len(enginesByPort(st, "python3", 18530)[18530]); n != 3 {
		t.Errorf("%d NUSE sockets on port 18530, want 3 (listener, client, accepted) on shm", n)
	}
	// The server's process group is its own (the test started it).
	if err := syscall.Kill(-srv.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cl.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the client is still blocked in recv after its peer was killed:\n%s", cl.output())
	}
	if out := cl.output(); cl.err != nil || !(strings.Contains(out, "eof") || strings.Contains(out, "reset")) {
		t.Fatalf("client: %v\n%s", cl.err, out)
	}
	t.Logf("client: %s", strings.TrimSpace(cl.output()))
}

// Issue 12: a rule naming an engine the daemon does not run gives one line
// from the shim (however many sockets the rule decides), and those sockets
// stay in the kernel: the program still works; the other rule's sockets
// are on their engine.
func TestEngineAbsent(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	ns.startDaemon("--engine", "gvisor", "--engines", "kernel", "--netdev", "none")
	const rules = "tcp *:18520 engine shm; tcp *:18521 engine kernel"
	out := ns.holdTwoconns(t, rules, func() {
		got := enginesByPort(ns.stats(), "twoconns", 18520, 18521)
		if len(got[18520]) != 0 {
			t.Errorf("port 18520 (engine shm, absent): NUSE sockets on %v, want none", got[18520])
		}
		if len(got[18521]) != 3 || got[18521][0] != "kernel" {
			t.Errorf("port 18521: sockets on %v, want 3 on kernel", got[18521])
		}
	}, 18520, 18521)
	const msg = `nuse: rule 1 names engine "shm", which the daemon does not run; its sockets stay in the kernel`
	if n := strings.Count(out, msg); n != 1 {
		t.Errorf("the shim's message appears %d times, want once: %q", n, msg)
	}
	if strings.Contains(out, "did not take the socket") {
		t.Errorf("an absent engine was reported as a refused socket too")
	}
}
