package e2e

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nuse-project/nuse/internal/shmem"
)

// The rings' shared memory never takes transparent huge pages, in the
// program or in the daemon (internal/shmem says why): every mapping of a
// session's arena and of a shm connection's region, on both sides, carries
// MADV_NOHUGEPAGE ("nh" in /proc/PID/smaps), whatever the system's
// shmem_enabled says. The test reads the flag rather than setting
// shmem_enabled (system-wide, it would reach every test running beside it).
func TestRingsNoHugePages(t *testing.T) {
	requireRoot(t)
	requireTool(t, "python3")
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage"); err != nil {
		t.Skip("SKIPPED: this kernel has no transparent huge pages (no /sys/kernel/mm/transparent_hugepage): nothing to avoid")
	}
	ns := newNetns(t)
	d := ns.startDaemon("--engine", "shm", "--netdev", "none", "--max-sockets", "16")
	p := ns.start(ns.nuseRun("tcp 127.0.0.0/8 engine shm", "python3", "-c", shmSelf, "18560")...)
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
}
