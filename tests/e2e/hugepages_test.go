package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nuse-project/nuse/internal/shmem"
)

// hugeSelf is shmSelf with an epoll set, so that the program has the
// shim's epoll-set table beside its fd table.
const hugeSelf = "import select\n_ep = select.epoll()\n" + shmSelf

// Memory NUSE maps that is touched sparsely never takes transparent huge
// pages, whatever the system's THP settings say: every mapping of a
// session's arena and of a shm connection's region, in the program and in
// the daemon (internal/shmem says why), and the shim's tables indexed by
// fd number (sized by the fd limit: shim/base.c table_map), carry
// MADV_NOHUGEPAGE ("nh" in /proc/PID/smaps). The test reads the flag
// rather than setting the THP knobs (system-wide, they would reach every
// test running beside it).
func TestRingsNoHugePages(t *testing.T) {
	requireRoot(t)
	requireTool(t, "python3")
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage"); err != nil {
		t.Skip("SKIPPED: this kernel has no transparent huge pages (no /sys/kernel/mm/transparent_hugepage): nothing to avoid")
	}
	ns := newNetns(t)
	d := ns.startDaemon("--engine", "shm", "--netdev", "none", "--max-sockets", "16")
	p := ns.start(ns.nuseRun("tcp 127.0.0.0/8 engine shm", "python3", "-c", hugeSelf, "18560")...)
	ns.waitFor("the program's own shm connection", 30*time.Second, func() bool { return strings.Contains(p.output(), "self ok") })
	for who, pid := range map[string]int{"the program": pidOf(t, p), "the daemon": d.cmd.Process.Pid} {
		seen := map[string]int{}
		for _, m := range mapsOf(t, pid) {
			var kind string
			switch {
			case strings.Contains(m.name, "memfd:nuse-session-"):
				kind = "an arena"
			case strings.Contains(m.name, "memfd:nuse-shm-conn"):
				kind = "a shm region"
			default:
				continue
			}
			seen[kind]++
			fl, err := shmem.VMFlagsAt(pid, m.lo)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(fl, "nh") {
				t.Errorf("%s maps %s (%s) at %#x without nh (MADV_NOHUGEPAGE): VmFlags %v", who, kind, m.name, m.lo, fl)
			}
		}
		if seen["an arena"] == 0 || seen["a shm region"] == 0 {
			t.Errorf("%s maps %d arenas and %d shm regions, want both (its maps changed names?)", who, seen["an arena"], seen["a shm region"])
		}
	}
	// The shim's tables: anonymous, unreserved ("nr"), 8 bytes for each fd
	// the limit allows (shim/nuse.c: at least 65536, at most 1 << 20).
	pid := pidOf(t, p)
	want := uint64(8 * fdTableLen(t, pid))
	tables := 0
	for _, m := range mapsOf(t, pid) {
		if m.name != "" || m.hi-m.lo != want {
			continue
		}
		fl, err := shmem.VMFlagsAt(pid, m.lo)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(fl, "nr") {
			continue
		}
		tables++
		if !slices.Contains(fl, "nh") {
			t.Errorf("the program has a table of %d bytes at %#x without nh (MADV_NOHUGEPAGE): VmFlags %v", want, m.lo, fl)
		}
	}
	if tables < 2 {
		t.Errorf("found %d of the shim's tables (%d bytes each) in the program, want the fd table and the epoll sets' at least", tables, want)
	}
}

// fdTableLen is the length of the shim's fd table in process pid: its hard
// fd limit, from 65536 to 1 << 20 (shim/nuse.c nuse_init).
func fdTableLen(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 65536
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && f[0] == "Max" && f[1] == "open" && f[2] == "files" {
			if h, err := strconv.Atoi(f[4]); err == nil && h > n {
				n = h
			}
		}
	}
	return min(n, 1<<20)
}
