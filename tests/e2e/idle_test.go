package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// idleClient opens 20 connections, talks once through each, then keeps
// them open without a word: the echo server's 20 threads sit blocked in
// recv, in the shim.
const idleClient = `
import socket, sys, time
cs = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(20)]
for c in cs:
    c.sendall(b"hello\n")
    if c.makefile("rb").readline() != b"echo: hello\n":
        sys.exit("no echo")
print("idle", flush=True)
time.sleep(30)
`

// cpuTicks is the process's user and system time so far, all its
// threads, in clock ticks (USER_HZ: 100 a second).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return u + s
}

// wakeups is how many times the process's threads have gone to sleep so
// far (voluntary context switches, all threads).
func wakeups(t *testing.T, pid int) int64 {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	var n int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that ended meanwhile
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
	}
	return n
}

// An idle daemon with idle programs connected through it takes no CPU to
// speak of: its workers' spins end and they sleep, and what wakes it is
// rare (a worker's check every 250 ms, the idle sweeps, a reminder a
// second from each thread blocked in the shim). A worker that never
// stopped spinning, or a timer at a spin's pace, takes many times the
// bound. Each engine waits its own way (the kernel engine's readiness
// waiter sits in epoll_wait). The sleeps a second are logged, not judged
// (they depend on how the reminders fall): 30-208 here, against 318-630
// before the reminders stopped opening the worker's busy window
// (TestIdleReminderIsNotWork in daemon/usock).
func TestIdleDaemonTakesNoCPU(t *testing.T) {
	requireRoot(t)
	requireTool(t, "python3")
	for i, engine := range []string{"gvisor", "kernel", "shm"} {
		t.Run(engine, func(t *testing.T) {
			ns := newNetns(t)
			d := ns.startDaemon("--engine", engine)
			rules := "tcp 127.0.0.0/8"
			port := 17420 + i
			if _, err := ns.startServer(rules, "python3", "-u", testdata("echoserver.py"), "127.0.0.1", fmt.Sprint(port)); err != nil {
				t.Fatal(err)
			}
			cli := ns.start(ns.nuseRun(rules, "python3", "-c", idleClient, fmt.Sprint(port))...)
			ns.waitOutput(cli, "the client's echo", "idle", time.Minute)
			time.Sleep(time.Second) // spins and the adaptive spin's window end
			pid := d.cmd.Process.Pid
			c0, s0, w0 := cpuTicks(t, pid), wakeups(t, pid), time.Now()
			time.Sleep(3 * time.Second)
			ticks, sleeps, wall := cpuTicks(t, pid)-c0, wakeups(t, pid)-s0, time.Since(w0)
			share := float64(ticks) * 10 * float64(time.Millisecond) / float64(wall)
			rate := float64(sleeps) / wall.Seconds()
			t.Logf("engine %s: the idle daemon took %d ms of CPU in %v (%.1f%% of a CPU) and slept %.0f times a second", engine, ticks*10, wall.Round(time.Millisecond), 100*share, rate)
			if share > 0.03 {
				t.Errorf("engine %s: an idle daemon took %.1f%% of a CPU over %v, want about none", engine, 100*share, wall.Round(time.Millisecond))
			}
			if s := sessionsOf(ns.stats(), "python3"); len(s) != 2 {
				t.Errorf("%d python3 sessions, want the server's and the idle client's", len(s))
			}
		})
	}
}
