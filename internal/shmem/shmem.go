// Package shmem maps the shared-memory files NUSE's rings live in (a
// session's arena, a shm-engine connection's region) so that the kernel
// never backs them with transparent huge pages.
//
// Rings are touched sparsely: a socket's two 1 MiB rings see a page or two
// until the connection gets busy, and an idle ring's pages are given back
// (hole punching). Where shared memory gets huge pages by default
// (/sys/kernel/mm/transparent_hugepage/shmem_enabled set to always or
// within_size), every first touch of a ring allocates and zeroes 2 MiB and
// every trim splits or frees it again: nginx + wrk -c 2000 through NUSE
// fell from about 16,000 requests/s to 6, the daemon faulting in 1.5 GB of
// huge pages within 6 s. Both ends of a mapping must ask (the pages are
// allocated by whichever process touches them first), so the shim does the
// same for its mappings (shim/session.c, shim/direct.c).
package shmem

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Map maps n bytes of fd shared and read-write, without huge pages.
func Map(fd, n int) ([]byte, error) {
	mem, err := unix.Mmap(fd, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	// EINVAL where the kernel has no THP at all: nothing to avoid then.
	_ = unix.Madvise(mem, unix.MADV_NOHUGEPAGE)
	return mem, nil
}

// THPSetting is the path of the system's huge-page policy for shared memory.
const THPSetting = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

// Forced reports whether the system gives shared memory huge pages whatever
// a mapping asks (shmem_enabled "force", a testing mode of the kernel's):
// the daemon warns then. No THP in the kernel is false.
func Forced() bool {
	b, err := os.ReadFile(THPSetting)
	return err == nil && strings.Contains(string(b), "[force]")
}

// VMFlags returns the kernel's flags (/proc/self/smaps "VmFlags", e.g. "nh"
// for no huge pages) of the mapping that starts at mem's first byte.
func VMFlags(mem []byte) ([]string, error) {
	if len(mem) == 0 {
		return nil, fmt.Errorf("empty mapping")
	}
	return VMFlagsAt(os.Getpid(), uint64(uintptr(unsafe.Pointer(&mem[0]))))
}

// VMFlagsAt returns the VmFlags of process pid's mapping that starts at addr.
func VMFlagsAt(pid int, addr uint64) ([]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := false
	for sc.Scan() {
		line := sc.Text()
		// A mapping's first line: "lo-hi perms offset dev inode [name]";
		// its fields' lines start with "Key:".
		if fs := strings.Fields(line); len(fs) >= 5 && !strings.HasSuffix(fs[0], ":") {
			lo, _, ok := strings.Cut(fs[0], "-")
			v, err := strconv.ParseUint(lo, 16, 64)
			found = ok && err == nil && v == addr
			continue
		}
		if found && strings.HasPrefix(line, "VmFlags:") {
			return strings.Fields(strings.TrimPrefix(line, "VmFlags:")), nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("no mapping of process %d starts at %#x", pid, addr)
}
