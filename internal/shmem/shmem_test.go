package shmem

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func memfd(t *testing.T, n int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("shmem-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(n)); err != nil {
		t.Fatal(err)
	}
	return fd
}

// A mapping made by Map carries "nh" (MADV_NOHUGEPAGE); a plain one of
// the same file does not: the check reads the right mapping.
func TestMapAsksNoHugePages(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage"); err != nil {
		t.Skip("SKIPPED: this kernel has no transparent huge pages (no /sys/kernel/mm/transparent_hugepage): nothing to avoid")
	}
	const n = 4 << 20
	fd := memfd(t, n)
	mem, err := Map(fd, n)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	plain, err := unix.Mmap(fd, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(plain)
	fl, err := VMFlags(mem)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fl, "nh") || !slices.Contains(fl, "sh") {
		t.Fatalf("Map's mapping has VmFlags %v, want nh (no huge pages) and sh (shared)", fl)
	}
	fl, err = VMFlags(plain)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(fl, "nh") {
		t.Fatalf("a plain mapping has VmFlags %v: the lookup found the wrong mapping", fl)
	}
}

func TestVMFlagsNoMapping(t *testing.T) {
	if _, err := VMFlagsAt(os.Getpid(), 1<<12); err == nil {
		t.Fatal("no error for an address where no mapping starts")
	}
	if _, err := VMFlags(nil); err == nil {
		t.Fatal("no error for an empty mapping")
	}
}
