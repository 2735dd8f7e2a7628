package e2e

import (
	"os"
	"strconv"
	"testing"
)

// Lazy readiness (shim/lazy.h, PROTOCOL.md): lazywait makes data arrive
// while the program is awake and waits for it every way a program may
// (level-triggered epoll_wait, poll, select, a dup, a blocking recv, a
// forked child, a nested set, EPOLLET after LT, two sets, a set past its
// lazy members, two threads in epoll_wait, what ends a wait the shim spins
// in); every check must pass, as over
// the kernel, on the engines whose bytes the daemon writes, and with the
// sanitizer build. The daemon must have left bytes out: otherwise the
// checks proved nothing about the lazy path.
func TestLazyReadiness(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat(bin("lazywait")); err != nil {
		t.Fatalf("%s missing: run 'make build'", bin("lazywait"))
	}
	// gvisor-spin: the shim spins 10 ms in epoll_wait before it sleeps, so
	// lazywait's late data, late signal and short timeout land in the spin.
	for i, c := range []struct{ name, engine, spin string }{{"gvisor", "gvisor", "20us"}, {"kernel", "kernel", "20us"}, {"gvisor-spin", "gvisor", "10ms"}} {
		t.Run(c.name, func(t *testing.T) {
			ns := newNetns(t)
			ns.startDaemon("--engine", c.engine, "--netdev", "none", "--shim-spin", c.spin)
			const rules = "tcp 127.0.0.0/8; tcp [::1]"
			port := 18600 + 10*i
			ns.runProgram(t, rules, false, "checks, 0 failed", bin("lazywait"), "127.0.0.1", strconv.Itoa(port))
			ns.runProgram(t, rules, false, "checks, 0 failed", bin("lazywait"), "::1", strconv.Itoa(port+1))
			ns.runProgram(t, rules, true, "checks, 0 failed", bin("lazywait"), "127.0.0.1", strconv.Itoa(port+2))
			var wakes, skipped, late uint64
			for _, s := range sessionsOf(ns.stats(), "lazywait") {
				wakes += s.Wakes
				skipped += s.LazySkipped
				late += s.LazyLate
			}
			t.Logf("lazywait sessions: %d readiness bytes written, %d left out, %d written late", wakes, skipped, late)
			if skipped == 0 {
				t.Errorf("the daemon left no readiness byte out: the lazy path was not exercised")
			}
			// Every wait of lazywait is one the shim sees: a byte the
			// 200 ms backstop had to write is a wait it missed.
			if late != 0 {
				t.Errorf("%d readiness bytes were written only by the daemon's backstop: a wait the shim did not see", late)
			}
		})
	}
}
